//! Runs the fuzz target's seed corpus, and random and mutated inputs, through
//! the client-message parser on stable Rust (cargo-fuzz needs nightly).

use std::path::Path;

use vireo_rfb::ClientMessage;

/// What the fuzz target checks: parsing never panics, consumes at least
/// one byte and no more than it has, and what parses re-encodes to bytes
/// that parse back to the same message. Returns how many messages parsed.
fn check(data: &[u8]) -> usize {
    let mut buf = data;
    let mut n = 0;
    while let Ok(Some((msg, used))) = ClientMessage::parse(buf) {
        assert!(
            used > 0 && used <= buf.len(),
            "{msg:?} used {used} of {}",
            buf.len()
        );
        let mut wire = Vec::new();
        msg.encode(&mut wire);
        assert_eq!(ClientMessage::parse(&wire), Ok(Some((msg, wire.len()))));
        buf = &buf[used..];
        n += 1;
    }
    n
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/client_messages");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
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
}

#[test]
fn the_seed_corpus_parses_as_expected() {
    let seeds = corpus();
    assert!(seeds.len() >= 10, "the corpus is missing");
    let total: usize = seeds.iter().map(|s| check(s)).sum();
    // The session seed alone holds five messages.
    assert!(total >= 12, "{total}");
}

#[test]
fn random_and_mutated_inputs_never_break_the_parser() {
    let seeds = corpus();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for round in 0..20_000 {
        let mut data = if round % 2 == 0 {
            let len = rng.below(64);
            (0..len).map(|_| rng.next() as u8).collect::<Vec<u8>>()
        } else {
            let mut d = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(4) {
                match rng.below(4) {
                    0 if !d.is_empty() => {
                        let i = rng.below(d.len());
                        d[i] ^= 1 << rng.below(8);
                    }
                    1 if !d.is_empty() => {
                        let i = rng.below(d.len());
                        d[i] = [0, 0xff, 0x7f, 0x80][rng.below(4)];
                    }
                    2 => {
                        let other = &seeds[rng.below(seeds.len())];
                        d.extend_from_slice(other);
                    }
                    _ => d.truncate(rng.below(d.len() + 1)),
                }
            }
            d
        };
        check(&data);
        data.reverse();
        check(&data);
    }
}
