//! The NBD export of `iscsi login --foreground` against real NBD clients
//! (libnbd's nbdinfo and nbdcopy, qemu-img, qemu-io, the `nbd` crate's
//! client) and against clients that break the protocol. Each test starts
//! our target and the login process; every external tool runs under a time
//! bound, and a test skips with a message when its tool is missing.

mod nbd_common;

use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;

use nbd_common::*;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

#[test]
fn nbdinfo_and_qemu_img_see_sizes_block_sizes_and_flags() {
    if !have("nbdinfo") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let thin = format!(
        "file:{},size=32M,sector=4096,thin",
        dir.path().join("thin.img").display()
    );
    let ro_img = dir.path().join("ro.img");
    std::fs::File::create(&ro_img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let ro = format!("file:{},mode=ro", ro_img.display());
    let t = target(&["mem:64M", &thin, &ro]);
    let l = login(t.addr().unwrap(), TARGET, &[]);

    let v = json(&run_ok(20, "nbdinfo", &["--json", &uri(&l, "lun0")]));
    let e = &v["exports"][0];
    assert_eq!(v["structured"], true);
    assert_eq!(e["export-name"], "lun0");
    assert_eq!(e["export-size"], 64 << 20);
    assert_eq!(e["block_size_minimum"], 512);
    assert_eq!(e["block_size_maximum"], 32 << 20);
    assert!(e["description"].as_str().unwrap().contains(TARGET), "{e}");
    for flag in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
        "can_df",
    ] {
        assert_eq!(e[flag], true, "{flag}: {e}");
    }
    assert_eq!(e["is_read_only"], false);
    assert_eq!(e["contexts"][0], "base:allocation");

    let v = json(&run_ok(20, "nbdinfo", &["--json", &uri(&l, "lun1")]));
    let e = &v["exports"][0];
    assert_eq!(e["export-size"], 32 << 20);
    assert_eq!(e["block_size_minimum"], 4096);

    let v = json(&run_ok(20, "nbdinfo", &["--json", &uri(&l, "lun2")]));
    let e = &v["exports"][0];
    assert_eq!(
        e["is_read_only"], true,
        "mode=ro LUN exported read-only: {e}"
    );
    assert_eq!(e["can_flush"], false);
    assert_eq!(e["can_trim"], false);
    assert_eq!(e["can_zero"], false);

    // NBD_OPT_LIST names every LUN; the empty name is the first export.
    let list = run_ok(
        20,
        "nbdinfo",
        &["--list", "--json", &format!("nbd://{}", nbd_addr(&l))],
    );
    let v = json(&list);
    let names: Vec<_> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["lun0", "lun1", "lun2"]);
    let size = run_ok(
        20,
        "nbdinfo",
        &["--size", &format!("nbd://{}", nbd_addr(&l))],
    );
    assert_eq!(size.trim(), (64u64 << 20).to_string());

    // An unknown export is refused (NBD_REP_ERR_UNKNOWN, which libnbd
    // reports as ENOENT).
    let o = run(20, "nbdinfo", &[&uri(&l, "nope")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("No such file") && err.contains("nope"),
        "{err}"
    );

    let v = json(&run_ok(
        30,
        "qemu-img",
        &["info", "--output=json", &uri(&l, "lun1")],
    ));
    assert_eq!(v["virtual-size"], 32 << 20);
}

#[test]
fn nbdcopy_256_mib_in_and_out_and_the_nbd_crate_reads_it_back() {
    if !have("nbdcopy") {
        return;
    }
    const SIZE: u64 = 256 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (src, back) = (dir.path().join("src.bin"), dir.path().join("back.bin"));
    random_file(&src, SIZE);
    let t = target(&["mem:256M"]);
    let l = login(t.addr().unwrap(), TARGET, &["--connections", "2"]);
    let u = uri(&l, "lun0");
    let start = std::time::Instant::now();
    run_ok(120, "nbdcopy", &["--flush", src.to_str().unwrap(), &u]);
    let write = start.elapsed();
    run_ok(120, "nbdcopy", &[&u, back.to_str().unwrap()]);
    eprintln!(
        "nbdcopy 256 MiB: in {write:?}, out {:?}",
        start.elapsed() - write
    );
    assert_eq!(
        first_difference(&src, &back),
        None,
        "data differs after the round trip"
    );

    // An independent client (NBD_OPT_EXPORT_NAME, simple replies).
    let s = TcpStream::connect(nbd_addr(&l)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let export = nbd::client::handshake(&s, b"lun0").expect("nbd crate handshake");
    assert_eq!(export.size, SIZE);
    let mut c = nbd::client::NbdClient::new(&s, &export);
    let mut want = std::fs::File::open(&src).unwrap();
    for off in [0u64, 1 << 20, 100 << 20, SIZE - (1 << 20)] {
        let (mut got, mut exp) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        c.seek(SeekFrom::Start(off)).unwrap();
        c.read_exact(&mut got).expect("nbd crate read");
        want.seek(SeekFrom::Start(off)).unwrap();
        want.read_exact(&mut exp).unwrap();
        assert!(got == exp, "nbd crate client read different data at {off}");
    }
}

#[test]
fn qemu_io_fua_write_zeroes_discard_and_map_shows_holes() {
    if !have("qemu-io") || !have("nbdinfo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("thin.img");
    let t = target(&[&format!("file:{},size=64M,thin", img.display())]);
    let l = login(t.addr().unwrap(), TARGET, &[]);
    let u = uri(&l, "lun0");
    let io = |cmds: &[&str]| {
        let mut args = vec!["-f", "raw"];
        for c in cmds {
            args.extend(["-c", c]);
        }
        args.push(&u);
        let out = run_ok(60, "qemu-io", &args);
        assert!(!out.contains("failed") && !out.contains("error"), "{out}");
        out
    };
    // FUA writes (-f), write-zeroes (-z), write-zeroes that may unmap (-z -u),
    // discard, flush; then verify every pattern.
    io(&[
        "write -P 0xab -f 0 16M",
        "write -P 0xcd 16M 16M",
        "write -z 4M 1M",
        "write -z -u 20M 2M",
        "discard 32M 16M",
        "flush",
    ]);
    io(&[
        "read -P 0xab 0 4M",
        "read -P 0 4M 1M",
        "read -P 0xab 5M 11M",
        "read -P 0xcd 16M 4M",
        "read -P 0 20M 2M",
        "read -P 0xcd 22M 10M",
    ]);
    // The FUA write reached the backing file.
    let file = std::fs::read(&img).unwrap();
    assert!(file[..4 << 20].iter().all(|&b| b == 0xab));
    // base:allocation from GET LBA STATUS: written ranges are data, the
    // discarded range and the never-written tail are holes reading as zero.
    let map = run_ok(20, "nbdinfo", &["--map", "--json", &u]);
    let v = json(&map);
    let extent_at = |off: u64| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| {
                let (o, n) = (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap());
                o <= off && off < o + n
            })
            .unwrap_or_else(|| panic!("no extent at {off}: {map}"))
            .clone()
    };
    assert_eq!(extent_at(0)["type"], 0, "{map}");
    assert_eq!(extent_at(17 << 20)["type"], 0, "{map}");
    assert_eq!(
        extent_at(40 << 20)["type"],
        3,
        "discarded range is a hole: {map}"
    );
    assert_eq!(extent_at(60 << 20)["type"], 3, "{map}");
}

#[test]
fn misbehaving_clients_do_not_disturb_others() {
    let dir = tempfile::tempdir().unwrap();
    let ro_img = dir.path().join("ro.img");
    std::fs::File::create(&ro_img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let ro = format!("file:{},mode=ro", ro_img.display());
    let t = target(&["mem:64M", &ro]);
    let l = login(t.addr().unwrap(), TARGET, &[]);
    let addr = nbd_addr(&l);
    // A well-behaved client, connected throughout.
    let mut good = Raw::connect(addr);
    let (size, _) = good.go("lun0");
    assert_eq!(size, 64 << 20);
    let pattern: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    good.request(0, CMD_WRITE, 1, 4096, 65536);
    good.send(&pattern);
    assert_eq!(good.simple_reply(), (0, 1));

    // Garbage instead of an option: the server hangs up on that client.
    let mut c = Raw::connect(addr);
    c.send(&[0x55; 600]);
    assert!(c.closed_by_server());
    // Client flags the server never advertised.
    let mut c = Raw(TcpStream::connect(addr).unwrap());
    c.0.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    c.read_n(18);
    c.send(&0xffu32.to_be_bytes());
    assert!(c.closed_by_server());
    // A gigantic option length is refused before anything is allocated.
    let mut c = Raw::connect(addr);
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&OPT_LIST.to_be_bytes());
    b.extend_from_slice(&0xffff_fff0u32.to_be_bytes());
    c.send(&b);
    assert!(c.closed_by_server());
    // An unknown option gets ERR_UNSUP and haggling goes on; an unknown
    // export gets ERR_UNKNOWN; NBD_OPT_EXPORT_NAME of one ends the session.
    let mut c = Raw::connect(addr);
    c.option(99, b"whatever");
    assert_eq!(c.option_reply().1, REP_ERR_UNSUP);
    c.option(OPT_GO, &Raw::go_data("lun7"));
    assert_eq!(c.option_reply().1, REP_ERR_UNKNOWN);
    c.option(OPT_LIST, &[]);
    let (_, kind, d) = c.option_reply();
    assert_eq!((kind, &d[4..]), (REP_SERVER, &b"lun0"[..]));
    assert_eq!(c.option_reply().1, REP_SERVER);
    assert_eq!(c.option_reply().1, REP_ACK);
    c.option(OPT_EXPORT_NAME, b"lun7");
    assert!(c.closed_by_server());

    // Bad requests in transmission: errors, and the connection goes on.
    let mut c = Raw::connect(addr);
    c.go("lun0");
    c.request(0, CMD_READ, 10, 1, 512); // unaligned offset
    assert_eq!(c.simple_reply(), (EINVAL, 10));
    c.request(0, CMD_READ, 11, 0, 100); // unaligned length
    assert_eq!(c.simple_reply(), (EINVAL, 11));
    c.request(0, CMD_READ, 12, 0, 64 << 20); // over the 32 MiB maximum
    assert_eq!(c.simple_reply(), (EINVAL, 12));
    c.request(0, CMD_WRITE, 13, 64 << 20, 512); // beyond the end
    c.send(&[0u8; 512]);
    assert_eq!(c.simple_reply(), (ENOSPC, 13));
    c.request(0, 42, 14, 0, 512); // unknown command
    assert_eq!(c.simple_reply(), (EINVAL, 14));
    c.request(1 << 9, CMD_READ, 15, 0, 512); // unknown flag
    assert_eq!(c.simple_reply(), (EINVAL, 15));
    // Several reads in flight, answered (possibly out of order) by handle.
    for h in 20..28u64 {
        c.request(0, CMD_READ, h, h * 4096, 4096);
    }
    let mut seen = Vec::new();
    for _ in 20..28 {
        let (err, h) = c.simple_reply();
        assert_eq!(err, 0);
        c.read_n(4096);
        seen.push(h);
    }
    seen.sort();
    assert_eq!(seen, (20..28).collect::<Vec<_>>());
    // A WRITE longer than the maximum cannot be skipped: hang up.
    c.request(0, CMD_WRITE, 30, 0, 64 << 20);
    assert!(c.closed_by_server());

    // A read-only export refuses writes with EPERM.
    let mut c = Raw::connect(addr);
    c.go("lun1");
    c.request(0, CMD_WRITE, 40, 0, 512);
    c.send(&[1u8; 512]);
    assert_eq!(c.simple_reply(), (EPERM, 40));

    // Disconnects in the middle of a request: half a payload; a big read
    // whose reply has nowhere to go; a bad magic.
    let mut c = Raw::connect(addr);
    c.go("lun0");
    c.request(0, CMD_WRITE, 50, 0, 1 << 20);
    c.send(&[9u8; 1000]);
    drop(c);
    let mut c = Raw::connect(addr);
    c.go("lun0");
    c.request(0, CMD_READ, 51, 0, 16 << 20);
    drop(c);
    let mut c = Raw::connect(addr);
    c.go("lun0");
    c.send(&[0xde; 28]);
    assert!(c.closed_by_server());

    // The first client is undisturbed: its data is there, the half-sent
    // write did not land, and it leaves cleanly.
    good.request(0, CMD_READ, 2, 4096, 65536);
    assert_eq!(good.simple_reply(), (0, 2));
    assert_eq!(good.read_n(65536), pattern);
    good.request(0, CMD_READ, 3, 0, 4096);
    assert_eq!(good.simple_reply(), (0, 3));
    assert_eq!(good.read_n(4096), vec![0u8; 4096]);
    good.request(0, CMD_DISC, 4, 0, 0);
    assert!(good.closed_by_server());
    // And new clients still get in.
    let mut c = Raw::connect(addr);
    assert_eq!(c.go("").0, 64 << 20, "the empty name is the first export");
}

/// A client that pipelines big reads and stops reading the replies: the
/// server stops taking its requests once what it holds (requests in flight
/// and replies not yet sent) reaches the connection's budget (128 requests,
/// 128 MiB), so its memory stays bounded however much was asked; once the
/// client reads again, every request is answered.
#[test]
fn a_client_that_stops_reading_replies_is_held_to_the_budget() {
    let t = target(&["mem:64M"]);
    let l = login(t.addr().unwrap(), TARGET, &[]);
    let rss_kib = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", l.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let mut c = Raw::connect(nbd_addr(&l));
    c.go("lun0");
    let before = rss_kib();
    const N: u64 = 512;
    const MIB: u32 = 1 << 20;
    let mut reqs = Vec::new();
    for h in 0..N {
        reqs.extend_from_slice(&0x2560_9513u32.to_be_bytes());
        reqs.extend_from_slice(&0u16.to_be_bytes());
        reqs.extend_from_slice(&CMD_READ.to_be_bytes());
        reqs.extend_from_slice(&h.to_be_bytes());
        reqs.extend_from_slice(&((h % 64) * u64::from(MIB)).to_be_bytes());
        reqs.extend_from_slice(&MIB.to_be_bytes());
    }
    // 14 KiB of requests for 512 MiB of replies, none of them read yet.
    c.send(&reqs);
    let mut peak = before;
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        peak = peak.max(rss_kib());
    }
    let grew = (peak - before) / 1024;
    assert!(
        grew < 300,
        "the server grew by {grew} MiB holding replies nobody read (budget 128 MiB)"
    );
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        let (err, h) = c.simple_reply();
        assert_eq!(err, 0, "request {h}");
        assert!(
            !std::mem::replace(&mut seen[h as usize], true),
            "handle {h} twice"
        );
        assert_eq!(c.read_n(MIB as usize), vec![0u8; MIB as usize]);
    }
    c.request(0, CMD_DISC, N, 0, 0);
    assert!(c.closed_by_server());
}

#[test]
fn unix_socket_export_and_the_remote_address_policy() {
    let t = target(&["mem:16M"]);
    let portal = t.addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nbd.sock");
    let mut l = login(
        portal,
        TARGET,
        &["--nbd", &format!("unix:{}", sock.display())],
    );
    let uri = format!("nbd+unix:///lun0?socket={}", sock.display());
    assert!(
        l.stdout_values("lun0: ").iter().any(|v| v.contains(&uri)),
        "{:?}",
        l.output()
    );
    if have("nbdinfo") {
        let out = run_ok(20, "nbdinfo", &["--size", &uri]);
        assert_eq!(out.trim(), (16u64 << 20).to_string());
    }
    let status = l.terminate(std::time::Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{:?}", l.output());
    assert!(!sock.exists(), "the socket file is removed at exit");

    // NBD has no authentication: a non-loopback address needs the flag
    // (refused before anything is bound; 192.0.2.1 is TEST-NET-1).
    let o = std::process::Command::new(BIN)
        .args(["login", "--foreground", "--portal", &portal.to_string()])
        .args(["--target", TARGET, "--nbd", "192.0.2.1:10809"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--allow-remote-nbd"));
}
