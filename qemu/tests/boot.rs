//! Boots real QEMU VMs. There is no appliance kernel to boot here, so each test writes a
//! tiny hand-assembled PVH ELF that prints to COM1 and then either exits through QEMU's
//! debug-exit port or halts forever.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nanovnf_qemu::{Accel, Error, Machine, ResolvedAccel, Vm, VmSpec};

/// Generous: TCG boots in tens of milliseconds, but tests run in parallel on small hosts.
const BOOT_TIMEOUT: Duration = Duration::from_secs(20);

/// What the guest does after printing.
#[derive(Clone, Copy)]
enum Then {
    /// Write this value to the debug-exit port: QEMU exits with `(v << 1) | 1`.
    Exit(u32),
    /// `cli; hlt` forever.
    Halt,
}

/// A 32-bit ELF executable for QEMU's PVH boot: one PT_LOAD segment at 1 MiB holding the
/// headers, the Xen PVH note and the code, plus a PT_NOTE segment over the note (QEMU
/// finds the note through the program headers, and reads it with the segment's 4-byte
/// alignment). The code writes `serial` to COM1 byte by byte, then does `then`.
fn pvh_elf(serial: &[u8], then: Then) -> Vec<u8> {
    const LOAD_ADDR: u32 = 0x10_0000;
    const EHDR_LEN: u32 = 52;
    const PHDR_LEN: u32 = 32;
    const PHNUM: u32 = 2;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    const NOTE_OFF: u32 = EHDR_LEN + PHNUM * PHDR_LEN;
    const NOTE_LEN: u32 = 12 + 4 + 4; // header, "Xen\0", 32-bit entry
    const CODE_OFF: u32 = NOTE_OFF + NOTE_LEN;
    let entry = LOAD_ADDR + CODE_OFF;

    // Entered in 32-bit protected mode with paging off.
    let mut code = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8 (COM1 data)
    for &b in serial {
        code.extend([0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    if let Then::Exit(v) = then {
        code.extend([0x66, 0xba, 0xf4, 0x00]); // mov dx, 0xf4 (isa-debug-exit)
        code.push(0xb8); // mov eax, v
        code.extend(v.to_le_bytes());
        code.push(0xef); // out dx, eax
    }
    code.extend([0xfa, 0xf4, 0xeb, 0xfd]); // cli; 1: hlt; jmp 1b

    let file_len = CODE_OFF + u32::try_from(code.len()).expect("small code");
    let mut elf = Vec::new();
    let u16s = |elf: &mut Vec<u8>, v: &[u16]| v.iter().for_each(|x| elf.extend(x.to_le_bytes()));
    let u32s = |elf: &mut Vec<u8>, v: &[u32]| v.iter().for_each(|x| elf.extend(x.to_le_bytes()));

    // ELF header: ELFCLASS32, little-endian, version 1, ET_EXEC, EM_386.
    elf.extend(b"\x7fELF\x01\x01\x01\x00");
    elf.extend([0; 8]);
    u16s(&mut elf, &[2, 3]);
    u32s(&mut elf, &[1, entry, EHDR_LEN, 0, 0]); // version, entry, phoff, shoff, flags
    u16s(
        &mut elf,
        &[EHDR_LEN as u16, PHDR_LEN as u16, PHNUM as u16, 40, 0, 0],
    );
    // PT_LOAD, R+X: the whole file at LOAD_ADDR.
    u32s(
        &mut elf,
        &[1, 0, LOAD_ADDR, LOAD_ADDR, file_len, file_len, 5, 0x1000],
    );
    // PT_NOTE over the PVH note, 4-byte aligned.
    let note_addr = LOAD_ADDR + NOTE_OFF;
    u32s(
        &mut elf,
        &[4, NOTE_OFF, note_addr, note_addr, NOTE_LEN, NOTE_LEN, 4, 4],
    );
    // The note: namesz, descsz, type, name, desc.
    u32s(&mut elf, &[4, 4, XEN_ELFNOTE_PHYS32_ENTRY]);
    elf.extend(b"Xen\0");
    u32s(&mut elf, &[entry]);
    assert_eq!(elf.len(), CODE_OFF as usize);
    elf.extend(code);
    elf
}

fn run_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("nanovnf-qemu-boot")
}

/// A spec for VM `name` running a guest that prints `serial` and then does `then`.
fn guest(name: &str, serial: &[u8], then: Then) -> VmSpec {
    let dir = run_dir();
    std::fs::create_dir_all(&dir).expect("create test run dir");
    let kernel = dir.join(format!("{name}.elf"));
    std::fs::write(&kernel, pvh_elf(serial, then)).expect("write test kernel");
    VmSpec::new(name, kernel).run_dir(dir)
}

/// Boots `spec`, expects `READY 5` then guest exit code 3, and returns the boot time.
fn boot_ready_exit(spec: &VmSpec, accel: ResolvedAccel) -> Duration {
    let start = Instant::now();
    let mut vm = spec.spawn().expect("spawn QEMU");
    assert_eq!(vm.accel(), accel);
    assert_eq!(vm.wait_ready(BOOT_TIMEOUT).expect("READY"), 5);
    let boot = start.elapsed();
    let status = vm.wait_exit(BOOT_TIMEOUT).expect("QEMU exits");
    assert_eq!(status.code(), Some(7));
    assert_eq!(Vm::guest_exit_code(status), Some(3));
    assert!(
        vm.serial_output().contains("READY 5\n"),
        "{}",
        vm.serial_output()
    );
    eprintln!(
        "{}: {accel} ({}), READY after {boot:?}, exited after {:?}",
        spec.name,
        vm.accel_reason(),
        start.elapsed()
    );
    boot
}

#[test]
fn microvm_tcg_boots_and_exits_through_debug_exit() {
    let spec = guest("microvm-tcg", b"READY 5\n", Then::Exit(3))
        .accel(Accel::Tcg)
        .append("role=test log=debug");
    boot_ready_exit(&spec, ResolvedAccel::Tcg);
}

#[test]
fn microvm_kvm_boots_and_exits_through_debug_exit() {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        eprintln!("skipped: /dev/kvm is not usable: {e}");
        return;
    }
    let spec = guest("microvm-kvm", b"READY 5\n", Then::Exit(3)).accel(Accel::Kvm);
    boot_ready_exit(&spec, ResolvedAccel::Kvm);
}

#[test]
fn auto_accel_boots_with_whatever_the_host_offers() {
    let spec = guest("microvm-auto", b"READY 5\n", Then::Exit(3));
    let (accel, why) = Accel::Auto.resolve().expect("resolve Auto");
    eprintln!("Accel::Auto on this host: {accel} ({why})");
    boot_ready_exit(&spec, accel);
}

#[test]
fn q35_tcg_boots_the_same_image_in_minimum_memory() {
    let spec = guest("q35-tcg", b"READY 5\n", Then::Exit(3))
        .machine(Machine::Q35)
        .accel(Accel::Tcg)
        .memory_mib(0);
    assert!(
        spec.command_line(ResolvedAccel::Tcg)
            .join(" ")
            .contains("-m 2M")
    );
    boot_ready_exit(&spec, ResolvedAccel::Tcg);
}

#[test]
fn microvm_boots_in_minimum_memory() {
    let spec = guest("microvm-min", b"READY 5\n", Then::Exit(3))
        .accel(Accel::Tcg)
        .memory_mib(Machine::Microvm.min_memory_mib());
    boot_ready_exit(&spec, ResolvedAccel::Tcg);
}

#[test]
fn config_blob_is_written_and_accepted_by_qemu() {
    let blob = b"NVC1 not really a config, but fw_cfg does not care".to_vec();
    let spec = guest("with-config", b"READY 5\n", Then::Exit(3))
        .accel(Accel::Tcg)
        .config(blob.clone());
    boot_ready_exit(&spec, ResolvedAccel::Tcg);
    assert_eq!(
        std::fs::read(spec.config_path()).expect("config file"),
        blob
    );
}

#[test]
fn missing_qemu_binary_is_reported_with_the_fix() {
    let spec = guest("no-qemu", b"", Then::Exit(0))
        .accel(Accel::Tcg)
        .qemu_binary("/nonexistent/qemu-system-x86_64");
    let err = spec.spawn().expect_err("no such binary");
    assert!(matches!(err, Error::QemuMissing { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("apt-get install -y qemu-system-x86")
    );
}

#[test]
fn drop_kills_a_running_vm() {
    let spec = guest("halts", b"READY 5\n", Then::Halt).accel(Accel::Tcg);
    let mut vm = spec.spawn().expect("spawn QEMU");
    assert_eq!(vm.wait_ready(BOOT_TIMEOUT).expect("READY"), 5);
    assert!(
        vm.try_wait().expect("try_wait").is_none(),
        "guest should halt, not exit"
    );
    let rss = vm.rss_kib().expect("RSS of a live QEMU");
    let cpu = vm.cpu_time().expect("CPU time of a live QEMU");
    eprintln!("idle QEMU: RSS {rss} KiB, CPU {cpu:?}");
    assert!(rss > 1024, "{rss} KiB");
    let proc_dir = PathBuf::from(format!("/proc/{}", vm.pid()));
    assert!(proc_dir.exists());
    drop(vm);
    assert!(!proc_dir.exists(), "QEMU survived its handle");
}

#[test]
fn kill_reaps_and_is_idempotent() {
    let spec = guest("killed", b"READY 5\n", Then::Halt).accel(Accel::Tcg);
    let mut vm = spec.spawn().expect("spawn QEMU");
    vm.wait_ready(BOOT_TIMEOUT).expect("READY");
    vm.kill();
    vm.kill();
    let status = vm.try_wait().expect("try_wait").expect("reaped");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert_eq!(Vm::guest_exit_code(status), None);
    assert_eq!(vm.rss_kib(), None);
}

#[test]
fn guest_exit_before_ready_fails_early_with_the_log() {
    let spec = guest("fails", b"boot: no config found\n", Then::Exit(9)).accel(Accel::Tcg);
    let mut vm = spec.spawn().expect("spawn QEMU");
    let start = Instant::now();
    let err = vm.wait_ready(BOOT_TIMEOUT).expect_err("no READY");
    assert!(start.elapsed() < BOOT_TIMEOUT / 2, "did not fail early");
    let Error::Exited {
        status,
        ref log_tail,
        ..
    } = err
    else {
        panic!("expected Exited, got {err:?}");
    };
    assert_eq!(Vm::guest_exit_code(status), Some(9));
    assert!(log_tail.contains("boot: no config found"), "{log_tail}");
    assert!(err.to_string().contains("guest exit code 9"), "{err}");
}

#[test]
fn qemu_own_errors_are_shown() {
    let dir = run_dir();
    std::fs::create_dir_all(&dir).expect("create test run dir");
    let kernel = dir.join("garbage.elf");
    std::fs::write(&kernel, b"\x7fELF but not really").expect("write bad kernel");
    let mut vm = VmSpec::new("garbage", &kernel)
        .run_dir(&dir)
        .accel(Accel::Tcg)
        .spawn()
        .expect("spawn QEMU");
    let err = vm.wait_ready(BOOT_TIMEOUT).expect_err("cannot boot");
    let Error::Exited { ref log_tail, .. } = err else {
        panic!("expected Exited, got {err:?}");
    };
    assert!(log_tail.contains("qemu-system-x86_64:"), "{log_tail}");
    eprintln!("{err}");
}

#[test]
fn timeout_carries_the_serial_tail() {
    let spec = guest("silent", b"HELLO\n", Then::Halt).accel(Accel::Tcg);
    let mut vm = spec.spawn().expect("spawn QEMU");
    vm.wait_for_line("HELLO", BOOT_TIMEOUT).expect("HELLO");
    let err = vm
        .wait_for_line("NEVER", Duration::from_millis(200))
        .expect_err("never printed");
    let Error::Timeout { ref log_tail, .. } = err else {
        panic!("expected Timeout, got {err:?}");
    };
    assert!(log_tail.contains("HELLO"), "{log_tail}");
}

#[test]
fn successive_waits_see_successive_generations() {
    let spec = guest(
        "generations",
        b"boot\nREADY 1\nreconfigured\nREADY 2\n",
        Then::Halt,
    )
    .accel(Accel::Tcg);
    let mut vm = spec.spawn().expect("spawn QEMU");
    assert_eq!(vm.wait_ready(BOOT_TIMEOUT).expect("first READY"), 1);
    assert_eq!(vm.wait_ready(BOOT_TIMEOUT).expect("second READY"), 2);
}

#[test]
fn runs_inside_a_network_namespace() {
    // Our own namespace: exercises open + setns without creating anything on the host.
    let spec = guest("in-netns", b"READY 5\n", Then::Exit(3))
        .accel(Accel::Tcg)
        .netns("/proc/self/ns/net");
    boot_ready_exit(&spec, ResolvedAccel::Tcg);

    let missing = guest("no-netns", b"", Then::Exit(0))
        .accel(Accel::Tcg)
        .netns("nanovnf-test-missing");
    let err = missing.spawn().expect_err("no such namespace");
    assert!(matches!(err, Error::BadNetns { .. }), "{err:?}");
}
