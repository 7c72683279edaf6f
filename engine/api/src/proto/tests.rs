//! Tests of the protocol: message round trips, compatibility with older
//! peers, frame limits, stream chunks on blocking and async streams.

use std::any::Any;
use std::io::{self, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::storage::{StorageRequest, VolumeSummary};

use super::*;

fn round_trip<T: Serialize + DeserializeOwned + Any + PartialEq + std::fmt::Debug>(msg: T) {
    let frame = encode(&msg).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let back: T = read_message(&mut &frame[..]).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn open_console_from_an_older_client_is_a_watcher() {
    let old: Request = serde_json::from_str(r#"{"op":"open_console","domain":"demo"}"#).unwrap();
    assert_eq!(
        old,
        Request::OpenConsole {
            domain: "demo".into(),
            exclusive: false,
            force: false,
            notify: false,
        }
    );
    round_trip(ClientMessage::Call {
        id: 3,
        request: Request::OpenConsole {
            domain: "demo".into(),
            exclusive: true,
            force: true,
            notify: false,
        },
    });
    // A client that does not ask for notices sends what older engines
    // know; one that does still reads as a call to them.
    let plain = serde_json::to_string(&Request::OpenConsole {
        domain: "demo".into(),
        exclusive: false,
        force: false,
        notify: false,
    })
    .unwrap();
    assert!(!plain.contains("notify"), "{plain}");
    round_trip(Request::OpenConsole {
        domain: "demo".into(),
        exclusive: false,
        force: false,
        notify: true,
    });
}

#[test]
fn console_notices_round_trip_and_are_unknown_to_older_clients() {
    round_trip(ServerMessage::ConsoleHeld {
        by: "vireoctl 0.1.0".into(),
    });
    round_trip(ServerMessage::ConsoleReleased);
    // An older client's enum has no such variant: its decoder fails,
    // which is why the engine only sends them to a watcher that asks.
    #[derive(Debug, serde::Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    #[allow(dead_code)]
    enum Older {
        ConsoleOutput { data: String },
        ConsoleClosed,
    }
    let frame = encode(&ServerMessage::ConsoleReleased).unwrap();
    assert!(serde_json::from_slice::<Older>(&frame[4..]).is_err());
}

#[test]
fn every_message_kind_round_trips() {
    let uuid = Uuid::new_v4();
    round_trip(ClientMessage::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        client: "test".into(),
        events: true,
    }));
    round_trip(ClientMessage::Call {
        id: 7,
        request: Request::Undefine {
            domain: "demo".into(),
            remove_all_storage: true,
            remove_storage: vec!["vdb".into()],
        },
    });
    round_trip(ClientMessage::ConsoleInput {
        data: vec![0, 1, 0x1d, 255],
    });
    round_trip(ClientMessage::Call {
        id: 9,
        request: Request::Storage(StorageRequest::UploadVolume {
            pool: Some("default".into()),
            volume: "disk.qcow2".into(),
            length: 5,
        }),
    });
    round_trip(ClientMessage::Call {
        id: 10,
        request: Request::Storage(StorageRequest::ListPools { all: true }),
    });
    round_trip(ClientMessage::StreamData {
        id: 9,
        data: vec![1, 2, 3],
    });
    round_trip(ClientMessage::StreamAck { id: 9, received: 3 });
    round_trip(ServerMessage::Progress {
        id: 9,
        done: 1,
        total: 5,
    });
    round_trip(ServerMessage::StreamData {
        id: 9,
        data: vec![4, 5],
    });
    round_trip(ServerMessage::Reply {
        id: 10,
        result: Ok(Response::Volumes {
            volumes: vec![VolumeSummary {
                name: "a".into(),
                path: "/p/a".into(),
                format: crate::storage::VolumeFormat::Raw,
                capacity: 1,
                allocation: 0,
                backing: None,
            }],
        }),
    });
    round_trip(ServerMessage::Reply {
        id: 7,
        result: Ok(Response::Screenshot {
            width: 2,
            height: 1,
            png: (0..=255).collect(),
        }),
    });
    round_trip(ServerMessage::Reply {
        id: 8,
        result: Err(ApiError::new(ErrorCode::NoDomain, "no domain 'x'")),
    });
    round_trip(ServerMessage::Event(Event::Lifecycle {
        name: "demo".into(),
        uuid,
        change: Lifecycle::Crashed {
            reason: "triple fault".into(),
        },
    }));
    round_trip(ServerMessage::Event(Event::Stats {
        domains: vec![DomainStats {
            name: "demo".into(),
            uuid,
            state: DomainState::Running,
            vcpus: vec![VcpuStats {
                id: 0,
                cpu_time_ns: 5,
                exits: 9,
            }],
            guest_memory_bytes: 1 << 20,
            vram_bytes: 4 << 20,
            rss_bytes: None,
            timestamp_ms: 1,
            disks: vec![DiskStats {
                target: "vda".into(),
                rd_req: 1,
                rd_bytes: 512,
                wr_req: 2,
                wr_bytes: 1024,
                flush_req: 3,
                errs: 0,
            }],
        }],
    }));
}

#[tokio::test]
async fn async_and_blocking_framing_agree() {
    let msg = ClientMessage::Call {
        id: 1,
        request: Request::ListDomains { all: true },
    };
    let mut buf = Vec::new();
    write_message_async(&mut buf, &msg).await.unwrap();
    assert_eq!(buf, encode(&msg).unwrap());
    let back: ClientMessage = read_message_async(&mut &buf[..]).await.unwrap();
    assert_eq!(back, msg);
}

#[test]
fn stream_chunks_travel_as_binary_frames() {
    let msg = ServerMessage::StreamData {
        id: 0x0102,
        data: vec![0xff, 0, 7],
    };
    let frame = encode(&msg).unwrap();
    assert_eq!(
        frame,
        [
            0,
            0,
            0,
            12,
            STREAM_FRAME,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
            2,
            0xff,
            0,
            7
        ]
    );
    let back: ServerMessage = read_message(&mut &frame[..]).unwrap();
    assert_eq!(back, msg);
    // A client message of the same shape, too.
    let up: ClientMessage = decode(&frame[4..]).unwrap();
    assert_eq!(
        up,
        ClientMessage::StreamData {
            id: 0x0102,
            data: vec![0xff, 0, 7]
        }
    );
    // Truncated headers and unexpected places are malformed.
    let err = decode::<ServerMessage>(&[STREAM_FRAME, 1, 2]).unwrap_err();
    assert!(err.to_string().contains("shorter than its header"), "{err}");
    let err = decode::<serde_json::Value>(&frame[4..]).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)), "{err}");
}

/// A writer that takes at most a few bytes per call, as a full socket
/// buffer does.
struct Trickle(Vec<u8>);

impl Write for Trickle {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(5);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn stream_chunks_are_written_and_read_without_building_frames() {
    let data: Vec<u8> = (0..100u8).collect();
    let mut out = Trickle(Vec::new());
    write_stream_chunk(&mut out, 9, &data).unwrap();
    let msg = ClientMessage::StreamData {
        id: 9,
        data: data.clone(),
    };
    assert_eq!(out.0, encode(&msg).unwrap());
    let mut again = Trickle(Vec::new());
    write_message(&mut again, &msg).unwrap();
    assert_eq!(again.0, out.0);

    // One buffer serves a chunk, a message, then a smaller chunk.
    let mut wire = out.0.clone();
    wire.extend(
        encode(&ClientMessage::StreamAck {
            id: 9,
            received: 100,
        })
        .unwrap(),
    );
    wire.extend(
        encode(&ClientMessage::StreamData {
            id: 9,
            data: vec![5; 3],
        })
        .unwrap(),
    );
    let mut r = &wire[..];
    let mut buf = Vec::new();
    let payload = read_frame(&mut r, &mut buf).unwrap();
    assert_eq!(stream_chunk(payload).unwrap(), Some((9, &data[..])));
    let payload = read_frame(&mut r, &mut buf).unwrap();
    assert_eq!(stream_chunk(payload).unwrap(), None);
    let ack: ClientMessage = decode(payload).unwrap();
    assert_eq!(
        ack,
        ClientMessage::StreamAck {
            id: 9,
            received: 100
        }
    );
    let payload = read_frame(&mut r, &mut buf).unwrap();
    assert_eq!(stream_chunk(payload).unwrap(), Some((9, &[5u8, 5, 5][..])));
    assert_eq!(buf.len(), 1 + 8 + 100, "the buffer was reused, not regrown");
    assert!(matches!(
        read_frame(&mut r, &mut buf),
        Err(FrameError::Closed)
    ));
}

#[test]
fn async_reads_put_chunks_into_the_spare_buffer() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let chunk = ServerMessage::StreamData {
            id: 3,
            data: vec![1, 2, 3, 4],
        };
        let (mut a, mut b) = tokio::io::duplex(7);
        let writer = async {
            write_message_async(&mut a, &chunk).await.unwrap();
            let reply = ServerMessage::Progress {
                id: 3,
                done: 4,
                total: 4,
            };
            write_message_async(&mut a, &reply).await.unwrap();
            // A stream frame too short for its header.
            a.write_all(&[0, 0, 0, 3, STREAM_FRAME, 1, 2])
                .await
                .unwrap();
        };
        let reader = async {
            // A used buffer, longer than the chunk: cut to size.
            let spare = vec![9u8; 64];
            let memory = spare.as_ptr();
            let got: ServerMessage = read_message_async_with(&mut b, || spare).await.unwrap();
            assert_eq!(got, chunk);
            let ServerMessage::StreamData { data, .. } = got else {
                unreachable!()
            };
            assert_eq!(
                data.as_ptr(),
                memory,
                "the chunk landed in the spare buffer"
            );
            let got: ServerMessage = read_message_async_with(&mut b, || panic!("not a chunk"))
                .await
                .unwrap();
            assert!(matches!(got, ServerMessage::Progress { done: 4, .. }));
            let err = read_message_async::<_, ServerMessage>(&mut b)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("shorter than its header"), "{err}");
        };
        tokio::join!(writer, reader);
    });
}

#[test]
fn oversized_frame_is_refused_before_reading_it() {
    // "GET " read as a length is 1.2 GB.
    let err = read_message::<_, ClientMessage>(&mut &b"GET / HTTP/1.1\r\n"[..]).unwrap_err();
    assert!(matches!(err, FrameError::TooLarge(0x4745_5420)), "{err}");
    assert!(err.to_string().contains("exceeds the 16777216-byte limit"));
}

#[test]
fn garbage_payload_is_a_malformed_message() {
    let mut frame = 5u32.to_be_bytes().to_vec();
    frame.extend_from_slice(b"{oops");
    let err = read_message::<_, ClientMessage>(&mut &frame[..]).unwrap_err();
    assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    // Valid JSON of the wrong shape is refused too.
    let frame = encode(&serde_json::json!({"type": "launch_missiles"})).unwrap();
    let err = read_message::<_, ClientMessage>(&mut &frame[..]).unwrap_err();
    assert!(err.to_string().starts_with("malformed message"), "{err}");
}

#[test]
fn clean_close_and_truncated_frame_are_told_apart() {
    let err = read_message::<_, ClientMessage>(&mut &b""[..]).unwrap_err();
    assert!(matches!(err, FrameError::Closed));
    let mut frame = encode(&ClientMessage::ConsoleInput { data: vec![1] }).unwrap();
    frame.truncate(frame.len() - 2);
    let err = read_message::<_, ClientMessage>(&mut &frame[..]).unwrap_err();
    assert!(matches!(err, FrameError::Io(_)), "{err}");
}

#[test]
fn states_use_virsh_words() {
    assert_eq!(DomainState::Shutoff.as_virsh(), "shut off");
    assert_eq!(DomainState::Running.number(), 1);
}
