//! Runs the fuzz targets' seed corpora (`fuzz/corpus/*`), and deterministic
//! mutations of them, through the parsers of hostile input on stable Rust
//! (cargo-fuzz needs nightly): libvirt domain XML ([`Domain::from_xml`]),
//! the import path ([`Imported::parse`]), storage pool and volume XML
//! ([`PoolDef::parse`], [`VolumeDef::parse`]) and the wire protocol's frames
//! ([`proto::read_message`], as a hostile client or engine sends them).
//!
//! Every input must give `Ok` or an error, never a panic, and what parses
//! must survive what the engine does with it next (written back, parsed
//! again). The loops are bounded in count; the inputs in size.

use std::path::Path;

use uuid::Uuid;
use vireo_api::Domain;
use vireo_api::import::{ImportError, Imported};
use vireo_api::proto::{self, ClientMessage, FrameError, MAX_FRAME, ServerMessage};
use vireo_api::storage::{PoolDef, VolumeDef};

// ---------------------------------------------------------------------------
// What each fuzz target checks (the same code is in fuzz/fuzz_targets/).

/// `fuzz_targets/domain_xml.rs`: parsing never panics; a parsed domain is
/// written back and that XML parses to the same domain.
fn check_domain(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(domain) = Domain::from_xml(text) else {
        return false;
    };
    let _ = domain.memory_bytes();
    for disk in &domain.devices.disks {
        let _ = (disk.unsupported(), disk.queues(), disk.volume(), disk.bus());
    }
    let xml = domain
        .to_xml()
        .unwrap_or_else(|e| panic!("a parsed domain cannot be written back: {e}\n{text}"));
    let back = Domain::from_xml(&xml)
        .unwrap_or_else(|e| panic!("the written-back domain is refused: {e}\n{xml}"));
    assert_eq!(back, domain, "the domain changed in a round trip:\n{xml}");
    true
}

/// `fuzz_targets/import.rs`: importing never panics; an imported document
/// with a generated `<uuid>` and MAC addresses inserted imports again, with
/// that UUID.
fn check_import(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let Ok(mut imported) = Imported::parse(text) else {
        return false;
    };
    let uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
    let had_uuid = imported.domain.uuid;
    imported.ensure_uuid(uuid);
    let macs = imported.ensure_macs();
    let again = Imported::parse(&imported.xml).unwrap_or_else(|e| {
        panic!(
            "the document with the generated uuid and {} MACs is refused: {e}\n{}",
            macs.len(),
            imported.xml
        )
    });
    assert_eq!(again.domain.uuid, Some(had_uuid.unwrap_or(uuid)));
    true
}

/// `fuzz_targets/storage_xml.rs`: pool and volume XML never panic; a
/// parsed pool is written back and parses to the same definition. Returns
/// whether either parsed.
fn check_storage(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let volume = VolumeDef::parse(text).is_ok();
    let Ok(pool) = PoolDef::parse(text) else {
        return volume;
    };
    let xml = pool.to_xml(Some((u64::MAX, 0, u64::MAX)));
    let back = PoolDef::parse(&xml)
        .unwrap_or_else(|e| panic!("the written-back pool is refused: {e}\n{xml}"));
    assert_eq!(back, pool, "the pool changed in a round trip:\n{xml}");
    true
}

/// `fuzz_targets/frames.rs`: a byte stream read as frames, as the engine
/// reads a client's and a client the engine's, never panics; each read
/// consumes at least the 4-byte length, and every message read encodes to
/// a frame that decodes to the same message. Returns the messages read.
fn check_frames(data: &[u8]) -> usize {
    fn stream<T>(data: &[u8]) -> usize
    where
        T: serde::Serialize + serde::de::DeserializeOwned + std::any::Any + PartialEq,
        T: std::fmt::Debug,
    {
        let mut rest = data;
        let mut n = 0;
        loop {
            let before = rest.len();
            match proto::read_message::<_, T>(&mut rest) {
                Ok(msg) => {
                    assert!(before - rest.len() >= 4);
                    let frame = proto::encode(&msg).unwrap();
                    let back: T = proto::read_message(&mut &frame[..]).unwrap();
                    assert_eq!(back, msg);
                    n += 1;
                }
                // A malformed payload was read whole: carry on after it,
                // as a test of the next frame (the engine would hang up).
                Err(FrameError::Malformed(_)) => assert!(before - rest.len() >= 4),
                Err(_) => return n,
            }
        }
    }
    stream::<ClientMessage>(data) + stream::<ServerMessage>(data)
}

// ---------------------------------------------------------------------------
// Corpus and mutations.

/// The files of `fuzz/corpus/TARGET`, by name.
fn named_corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p).unwrap())
        })
        .collect()
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    named_corpus(target).into_iter().map(|(_, d)| d).collect()
}

/// The XML seeds: domain documents serve both the domain and the import
/// targets.
fn xml_corpus() -> Vec<Vec<u8>> {
    let mut seeds = corpus("domain_xml");
    seeds.extend(corpus("import"));
    seeds
}

/// xorshift64*: reproducible noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values that break numeric fields: overflow u64/u32/i32, signs, floats.
const HUGE_NUMBERS: &[&str] = &[
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999999999",
    "4294967295",
    "4294967296",
    "2147483648",
    "-1",
    "-9223372036854775809",
    "0",
    "1e309",
    "NaN",
    "",
    " 7 ",
    "0x10",
];

/// Fragments that confuse XML parsers.
const XML_SNIPPETS: &[&str] = &[
    "<",
    ">",
    "&",
    "&amp",
    "&#0;",
    "&#x110000;",
    "&#xFFFFFFFFFF;",
    "&unknown;",
    "]]>",
    "<![CDATA[",
    "<!--",
    "-->",
    "<?xml version='1.0'?>",
    "<!DOCTYPE domain [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;'>]>",
    "&b;",
    "</domain>",
    "<domain>",
    "<disk type='file'>",
    "</disk>",
    " unit='EiB'",
    " unit='bogus'",
    " type='file' type='block'",
    "\u{feff}",
    "\u{0}",
    "\r\n",
    "\u{10ffff}",
    "é",
];

fn flip(d: &mut [u8], rng: &mut Rng) {
    if !d.is_empty() {
        let i = rng.below(d.len());
        d[i] ^= 1 << rng.below(8);
    }
}

fn insert(d: &mut Vec<u8>, rng: &mut Rng, bytes: &[u8]) {
    let at = rng.below(d.len() + 1);
    d.splice(at..at, bytes.iter().copied());
}

/// Replaces a random run of digits with a value from [`HUGE_NUMBERS`].
fn huge_number(d: &mut Vec<u8>, rng: &mut Rng) {
    let digits: Vec<usize> = (0..d.len()).filter(|&i| d[i].is_ascii_digit()).collect();
    if digits.is_empty() {
        return;
    }
    let start = *rng.pick(&digits);
    let end = (start..d.len())
        .find(|&i| !d[i].is_ascii_digit())
        .unwrap_or(d.len());
    let start = (0..start)
        .rev()
        .find(|&i| !d[i].is_ascii_digit())
        .map_or(0, |i| i + 1);
    d.splice(start..end, rng.pick(HUGE_NUMBERS).bytes());
}

/// Duplicates a random element (start tag to its end tag, or an empty
/// element) right after itself.
fn duplicate_element(d: &mut Vec<u8>, rng: &mut Rng) {
    let starts: Vec<usize> = (0..d.len().saturating_sub(1))
        .filter(|&i| d[i] == b'<' && d[i + 1].is_ascii_alphabetic())
        .collect();
    if starts.is_empty() {
        return;
    }
    let start = *rng.pick(&starts);
    let name_end = (start + 1..d.len())
        .find(|&i| !(d[i].is_ascii_alphanumeric() || d[i] == b'_' || d[i] == b'-'))
        .unwrap_or(d.len());
    let name = d[start + 1..name_end].to_vec();
    let Some(gt) = (name_end..d.len()).find(|&i| d[i] == b'>') else {
        return;
    };
    let end = if d[gt - 1] == b'/' {
        gt + 1
    } else {
        let close = [b"</".as_slice(), &name, b">"].concat();
        match d[gt..].windows(close.len()).position(|w| w == close) {
            Some(p) => gt + p + close.len(),
            None => return,
        }
    };
    let copy = d[start..end].to_vec();
    d.splice(end..end, copy);
}

/// Nests `depth` elements right after a random `>` (inside whatever
/// element that is), or at a random place.
fn deep_nesting(d: &mut Vec<u8>, rng: &mut Rng, depth: usize) {
    let name = *rng.pick(&["a", "devices", "disk", "domain", "pool", "os"]);
    let mut nest = format!("<{name}>").repeat(depth);
    if rng.below(4) != 0 {
        nest.push_str(&format!("</{name}>").repeat(depth));
    }
    let gts: Vec<usize> = (0..d.len()).filter(|&i| d[i] == b'>').collect();
    let at = if gts.is_empty() || rng.below(8) == 0 {
        rng.below(d.len() + 1)
    } else {
        rng.pick(&gts) + 1
    };
    d.splice(at..at, nest.bytes());
}

/// One to four XML mutations of `seed`.
fn mutate_xml(seed: &[u8], seeds: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(10) {
            0 => flip(&mut d, rng),
            1 => {
                let len = d.len();
                d.truncate(rng.below(len + 1));
            }
            2 => {
                let s = rng.pick(XML_SNIPPETS).as_bytes().to_vec();
                insert(&mut d, rng, &s);
            }
            3 => {
                let noise: Vec<u8> = (0..=rng.below(8)).map(|_| rng.next() as u8).collect();
                insert(&mut d, rng, &noise);
            }
            4 | 5 => duplicate_element(&mut d, rng),
            6 | 7 => huge_number(&mut d, rng),
            8 => {
                let depth = *rng.pick(&[2, 50, 1000, 20_000]);
                deep_nesting(&mut d, rng, depth);
            }
            _ => {
                // A slice of another seed spliced in.
                let other = rng.pick(seeds);
                let a = rng.below(other.len());
                let b = a + rng.below(other.len() - a + 1);
                let piece = other[a..b].to_vec();
                insert(&mut d, rng, &piece);
            }
        }
    }
    d
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// One to four frame-stream mutations of `seed`: bytes, lengths, JSON.
fn mutate_frames(seed: &[u8], seeds: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut d = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(9) {
            0 => flip(&mut d, rng),
            1 => {
                let len = d.len();
                d.truncate(rng.below(len + 1));
            }
            2 if d.len() >= 4 => {
                // The length prefix of the first frame.
                let len = *rng.pick(&[
                    0u32,
                    1,
                    8,
                    9,
                    MAX_FRAME as u32,
                    MAX_FRAME as u32 + 1,
                    u32::MAX,
                    (d.len() - 4) as u32 + 1,
                    (d.len() - 4).saturating_sub(1) as u32,
                ]);
                d[..4].copy_from_slice(&len.to_be_bytes());
            }
            3 => huge_number(&mut d, rng),
            4 => {
                // Deeply nested JSON as a field's value.
                let depth = *rng.pick(&[10, 200, 5000]);
                let open = *rng.pick(&["[", "{\"a\":"]);
                let payload = format!(
                    "{{\"type\":\"call\",\"id\":1,\"request\":{}0{}}}",
                    open.repeat(depth),
                    if open == "[" { "]" } else { "}" }.repeat(depth)
                );
                d.extend_from_slice(&frame(payload.as_bytes()));
            }
            5 => {
                let s = *rng.pick(&[
                    "\"",
                    "\\u0000",
                    "\\ud800",
                    "{",
                    "}",
                    ",",
                    "null",
                    "\"data\":\"!!!!\"",
                    "\"data\":\"QUJD=\"",
                    "\"type\":\"stream_data\"",
                    "\u{0}",
                ]);
                insert(&mut d, rng, s.as_bytes());
            }
            6 => {
                // A binary stream frame with a random header.
                let mut payload = vec![proto::STREAM_FRAME];
                payload.extend((0..rng.below(12)).map(|_| rng.next() as u8));
                d.extend_from_slice(&frame(&payload));
            }
            7 => {
                let other = rng.pick(seeds).clone();
                d.extend_from_slice(&other);
            }
            _ => {
                let noise: Vec<u8> = (0..=rng.below(8)).map(|_| rng.next() as u8).collect();
                insert(&mut d, rng, &noise);
            }
        }
    }
    d
}

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn the_seed_corpora_parse_as_expected() {
    // Every real domain document (virsh, virt-install, the tests' XML)
    // parses, imports and survives its round trip; the inputs that once
    // broke a parser (`regress-*`) are refused by the import.
    let xml: Vec<_> = named_corpus("domain_xml")
        .into_iter()
        .chain(named_corpus("import"))
        .collect();
    assert!(xml.len() >= 9, "the XML corpus is missing");
    for (name, data) in &xml {
        let valid = !name.starts_with("regress-");
        let domain = check_domain(data);
        assert!(domain || !valid, "{name}: Domain::from_xml refused it");
        assert_eq!(check_import(data), valid, "{name}: Imported::parse");
    }

    let storage = named_corpus("storage_xml");
    for (name, data) in &storage {
        assert_eq!(check_storage(data), !name.starts_with("regress-"), "{name}");
    }

    let frames = corpus("frames");
    assert!(frames.len() >= 8, "the frame corpus is missing");
    let messages: usize = frames.iter().map(|s| check_frames(s)).sum();
    assert!(messages >= 10, "{messages} messages read from the frames");
}

#[test]
fn mutated_domain_xml_never_breaks_the_parsers() {
    let seeds = xml_corpus();
    let mut rng = Rng(0x5eed_d0a1_0000_0001);
    let mut parsed = 0;
    for _ in 0..2500 {
        let data = mutate_xml(rng.pick(&seeds).as_slice(), &seeds, &mut rng);
        parsed += usize::from(check_domain(&data));
        parsed += usize::from(check_import(&data));
    }
    // Many mutations (a number in an unused attribute, a duplicated
    // unsupported element) leave a valid document: the valid path is
    // exercised too.
    assert!(parsed > 100, "only {parsed} mutated documents parsed");
}

#[test]
fn mutated_storage_xml_never_breaks_the_parsers() {
    let seeds = corpus("storage_xml");
    let mut rng = Rng(0x5eed_5707_0000_0002);
    let mut parsed = 0;
    for _ in 0..3000 {
        let data = mutate_xml(rng.pick(&seeds).as_slice(), &seeds, &mut rng);
        parsed += usize::from(check_storage(&data));
    }
    assert!(parsed > 100, "only {parsed} mutated documents parsed");
}

#[test]
fn mutated_frames_never_break_the_decoder() {
    let seeds = corpus("frames");
    let mut rng = Rng(0x5eed_f4a3_0000_0003);
    let mut read = 0;
    for round in 0..8000 {
        let data = if round % 4 == 0 {
            let len = rng.below(48);
            (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        } else {
            mutate_frames(rng.pick(&seeds).as_slice(), &seeds, &mut rng)
        };
        read += check_frames(&data);
    }
    assert!(read > 1000, "only {read} messages read");
}

// ---------------------------------------------------------------------------
// Errors name what was wrong.

fn domain_err(xml: &str) -> String {
    Domain::from_xml(xml).unwrap_err().to_string()
}

fn import_err(xml: &str) -> ImportError {
    Imported::parse(xml).unwrap_err()
}

const BASE: &str = "<domain type='kvm'><name>n</name><memory unit='MiB'>64</memory>\
                    <vcpu>1</vcpu><os><type>hvm</type></os>DEVICES</domain>";

fn with_devices(devices: &str) -> String {
    BASE.replace("DEVICES", &format!("<devices>{devices}</devices>"))
}

#[test]
fn hostile_domain_xml_errors_name_the_element_and_line() {
    // A size that overflows 64 bits, after the unit is applied.
    let xml = BASE.replace("unit='MiB'>64<", "unit='EiB'>100<");
    let err = domain_err(&xml);
    assert!(err.contains("<memory>") && err.contains("64 bits"), "{err}");

    // A number too large for its field at all.
    let xml = BASE.replace("<vcpu>1<", "<vcpu>99999999999999999999<");
    let err = domain_err(&xml);
    assert!(err.contains("invalid domain XML"), "{err}");

    // An unknown unit.
    let xml = BASE.replace("unit='MiB'", "unit='parsecs'");
    let err = domain_err(&xml);
    assert!(
        err.contains("<memory>") && err.contains("'parsecs'"),
        "{err}"
    );

    // A duplicated disk names the target.
    let disk = "<disk type='file'><source file='/a'/><target dev='vdq' bus='virtio'/></disk>";
    let err = domain_err(&with_devices(&disk.repeat(2)));
    assert!(err.contains("'vdq'") && err.contains("two disks"), "{err}");

    // A broken document gives line, column and the element path.
    let xml = "<domain type='kvm'>\n  <name>n</name>\n  <devices>\n    <disk type='file'>\n      \
               <source file='/a'/>\n    </devices>\n</domain>\n";
    match import_err(xml) {
        ImportError::Syntax {
            line,
            element,
            message,
            ..
        } => {
            assert_eq!(line, 6, "{message}");
            assert_eq!(element, "domain/devices/disk", "{message}");
        }
        other => panic!("{other}"),
    }

    // An entity declared in a DOCTYPE is not expanded (no billion laughs).
    let xml = "<!DOCTYPE domain [<!ENTITY a 'aaaaaaaaaa'>]>\n<domain type='kvm'><name>&a;</name>\
               <memory>64</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>";
    let err = import_err(xml).to_string();
    assert!(err.contains("unrecognized entity `a`"), "{err}");

    // Deep nesting is refused at libxml2's depth (quick-xml has no limit,
    // and the import's element paths made it quadratic), naming the line
    // and the element without a path as long as the document.
    let xml = with_devices(&"\n<a>".repeat(100_000));
    let err = import_err(&xml).to_string();
    assert!(
        err.starts_with("malformed domain XML at line 256,")
            && err.contains("in <domain/devices/a/…/a/a/a>")
            && err.ends_with("<a> is nested deeper than 256 elements"),
        "{err}"
    );
    let err = domain_err(&xml);
    assert_eq!(
        err,
        "invalid domain XML: line 256: <a> is nested deeper than 256 elements"
    );

    // A DOCTYPE inside the document made quick-xml's deserializer reach
    // an `unreachable!`; it is refused before, naming it and the line.
    let xml = BASE.replace("<name>n</name>", "<name>\nn<!DOCTYPE x>n</name>");
    let err = domain_err(&xml);
    assert_eq!(
        err,
        "invalid domain XML: line 2: a <!DOCTYPE> inside the document (it may only come \
         before the root element)"
    );
}

#[test]
fn hostile_storage_xml_errors_name_the_element() {
    let err =
        VolumeDef::parse("<volume><name>v</name><capacity unit='EiB'>99999</capacity></volume>")
            .unwrap_err();
    assert!(
        err.contains("<capacity>") && err.contains("64 bits"),
        "{err}"
    );
    let err = VolumeDef::parse(
        "<volume><name>v</name><capacity>99999999999999999999999</capacity></volume>",
    )
    .unwrap_err();
    assert!(err.contains("invalid storage volume XML"), "{err}");
    let err = PoolDef::parse(
        "<pool type='dir'><name>p</name><uuid>not-a-uuid</uuid>\
         <target><path>/x</path></target></pool>",
    )
    .unwrap_err();
    assert!(
        err.contains("<uuid>") && err.contains("not-a-uuid"),
        "{err}"
    );
    let err =
        VolumeDef::parse("<volume><name>../etc</name><capacity>1</capacity></volume>").unwrap_err();
    assert!(err.contains("'../etc'"), "{err}");
}

#[test]
fn hostile_frames_errors_say_what_was_wrong() {
    // An HTTP request read as a frame: its length is absurd.
    let err = proto::read_message::<_, ClientMessage>(&mut &b"GET / HTTP/1.1\r\n\r\n"[..])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("exceeds") && err.contains("Vireo protocol"),
        "{err}"
    );
    // A call id that does not fit 64 bits.
    let payload = br#"{"type":"call","id":18446744073709551616,"request":{"op":"version"}}"#;
    let err = proto::read_message::<_, ClientMessage>(&mut &frame(payload)[..])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("malformed message") && err.contains("expected u64"),
        "{err}"
    );
    // An unknown request names the variant.
    let payload = br#"{"type":"call","id":1,"request":{"op":"format_host"}}"#;
    let err = proto::read_message::<_, ClientMessage>(&mut &frame(payload)[..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("format_host"), "{err}");
    // Bad base64 in console input.
    let payload = br#"{"type":"console_input","data":"!!"}"#;
    let err = proto::read_message::<_, ClientMessage>(&mut &frame(payload)[..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("base64"), "{err}");
    // A stream frame shorter than its header.
    let err = proto::read_message::<_, ClientMessage>(&mut &frame(&[0, 1, 2])[..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("shorter than its header"), "{err}");
    // Deep nesting stops at serde_json's recursion limit.
    let payload = format!(
        "{{\"type\":\"call\",\"id\":1,\"request\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let err = proto::read_message::<_, ClientMessage>(&mut &frame(payload.as_bytes())[..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("recursion limit"), "{err}");
    // A frame cut short is a connection error, not a hang.
    let mut cut = frame(br#"{"type":"call","id":1,"request":{"op":"version"}}"#);
    cut.truncate(20);
    let err = proto::read_message::<_, ClientMessage>(&mut &cut[..]).unwrap_err();
    assert!(matches!(err, FrameError::Io(_)), "{err}");
}
