//! The `walrus-gateway blob-id` subcommand: the Blob ID alone on stdout, or a one-line reason on
//! stderr and a non-zero exit.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_walrus-gateway"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // A command that fails before reading stdin closes it early: a broken pipe is expected.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn prints_the_blob_id_of_a_file_or_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    for n in [10u16, 1000] {
        let expected = format!("{}\n", codec::blob_id(n, &data).unwrap());
        let n_arg = n.to_string();
        let from_file = run(
            &["blob-id", "--n-shards", &n_arg, path.to_str().unwrap()],
            b"",
        );
        assert!(from_file.status.success());
        assert_eq!(String::from_utf8(from_file.stdout).unwrap(), expected);
        let from_stdin = run(&["blob-id", "--n-shards", &n_arg, "-"], &data);
        assert!(from_stdin.status.success());
        assert_eq!(String::from_utf8(from_stdin.stdout).unwrap(), expected);
    }
    let default = run(&["blob-id", path.to_str().unwrap()], b"");
    assert_eq!(
        String::from_utf8(default.stdout).unwrap(),
        format!("{}\n", codec::blob_id(1000, &data).unwrap())
    );
}

fn fails_with_one_line(args: &[&str], stdin: &[u8], needle: &str) {
    let out = run(args, stdin);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn errors_are_one_line_reasons() {
    fails_with_one_line(
        &["blob-id", "/no/such/file"],
        b"",
        "cannot open /no/such/file",
    );
    fails_with_one_line(&["blob-id", "--n-shards", "3", "-"], b"x", "at least 4");
    // n = 4: kp = 2, ks = 3, at most 2 * 3 * 65534 bytes.
    let too_big = vec![0u8; 2 * 3 * 65534 + 1];
    fails_with_one_line(
        &["blob-id", "--n-shards", "4", "-"],
        &too_big,
        "larger than",
    );
}
