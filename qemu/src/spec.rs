//! What an appliance VM is made of ([`VmSpec`]) and how that becomes a QEMU command line.
//! `command_line` is pure so the exact flags are unit-tested; `spawn` adds the side effects
//! (run directory, config file, logs, network namespace) and hands back a supervised [`Vm`].

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;
use crate::accel::{Accel, ResolvedAccel};
use crate::netns;
use crate::vm::Vm;

/// Default QEMU binary, looked up on `PATH`.
pub const DEFAULT_QEMU_BINARY: &str = "qemu-system-x86_64";

/// Default guest RAM: enough for the appliances, small enough for hundreds per host.
pub const DEFAULT_MEMORY_MIB: u32 = 4;

/// The I/O port of QEMU's `isa-debug-exit` device; see [`Vm::guest_exit_code`].
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// The board QEMU emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// `-M microvm` with qboot and virtio-mmio: boots in tens of milliseconds.
    #[default]
    Microvm,
    /// `-M q35` with SeaBIOS and virtio-pci: slower to boot (seconds under nested KVM),
    /// kept working for hosts and tools that expect PCI.
    Q35,
}

impl Machine {
    /// The least guest RAM, in MiB, with which this machine boots a PVH kernel here. With
    /// `-m 1M` QEMU 7.2 hangs silently on both boards; SeaBIOS on q35 keeps the top 128 KiB
    /// of RAM for itself but still boots in 2 MiB.
    pub fn min_memory_mib(self) -> u32 {
        match self {
            Machine::Microvm => 2,
            Machine::Q35 => 2,
        }
    }

    fn machine_arg(self) -> &'static str {
        match self {
            // acpi=off also makes QEMU append the virtio-mmio device list to the kernel
            // command line; rtc=off and x-option-roms=off shave boot time.
            Machine::Microvm => "microvm,acpi=off,x-option-roms=off,isa-serial=on,rtc=off",
            Machine::Q35 => "q35",
        }
    }
}

/// One virtio-net interface of the VM, backed by a host tap device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// Name of the tap device on the host (in the VM's network namespace, if it has one).
    pub tap: String,
    /// The guest-side MAC address; appliances match their configuration to NICs by it.
    pub mac: [u8; 6],
    /// Offer checksum and segmentation offloads to the guest (QEMU's default). Off, the
    /// device offers none, as `ethtool -K … tso off gso off tx off rx off` would leave a VM.
    pub offloads: bool,
}

impl Nic {
    /// A NIC on `tap` with guest MAC `mac`.
    pub fn new(tap: impl Into<String>, mac: [u8; 6]) -> Self {
        Nic {
            tap: tap.into(),
            mac,
            offloads: true,
        }
    }

    /// The same NIC with every offload switched off in the device.
    pub fn without_offloads(mut self) -> Self {
        self.offloads = false;
        self
    }
}

/// QEMU virtio-net properties that withdraw every offload feature.
const NO_OFFLOADS: &str = ",csum=off,guest_csum=off,guest_tso4=off,guest_tso6=off,guest_ecn=off,\
                           guest_ufo=off,host_tso4=off,host_tso6=off,host_ecn=off,host_ufo=off";

/// Formats a MAC address the way QEMU takes it: `52:54:00:12:34:56`.
pub fn format_mac(mac: [u8; 6]) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Everything needed to start one appliance VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Names the VM in logs, errors and its files in `run_dir`: letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// The appliance kernel: an ELF image with a PVH entry note.
    pub kernel: PathBuf,
    /// The board to emulate.
    pub machine: Machine,
    /// The accelerator to ask for.
    pub accel: Accel,
    /// Guest RAM in MiB; raised to [`Machine::min_memory_mib`] if smaller.
    pub memory_mib: u32,
    /// Network interfaces, in guest device order.
    pub nics: Vec<Nic>,
    /// Boot configuration blob, written to `<run_dir>/<name>.config` and handed to the
    /// guest as fw_cfg file `opt/nanovnf/config`.
    pub config: Option<Vec<u8>>,
    /// Kernel command line; omitted when empty.
    pub append: String,
    /// Directory for the config file, the serial log and QEMU's own log; created if missing.
    pub run_dir: PathBuf,
    /// Network namespace to run QEMU in, so its taps are looked up there: a name under
    /// `/var/run/netns` (as made by `ip netns add`) or an absolute path to a namespace file
    /// such as `/proc/<pid>/ns/net`.
    pub netns: Option<String>,
    /// The QEMU binary: a path, or a name looked up on `PATH`.
    pub qemu_binary: PathBuf,
    /// Appended verbatim after everything else.
    pub extra_args: Vec<String>,
    /// Give the guest a control channel: a second UART (COM2) on the unix socket
    /// `<run_dir>/<name>.ctl`, where QEMU listens and the manager connects (and reconnects).
    pub control: bool,
}

impl VmSpec {
    /// A microvm with [`DEFAULT_MEMORY_MIB`], no NICs, no config, automatic accelerator, and
    /// its files in `$TMPDIR/nanovnf`.
    pub fn new(name: impl Into<String>, kernel: impl Into<PathBuf>) -> Self {
        VmSpec {
            name: name.into(),
            kernel: kernel.into(),
            machine: Machine::default(),
            accel: Accel::default(),
            memory_mib: DEFAULT_MEMORY_MIB,
            nics: Vec::new(),
            config: None,
            append: String::new(),
            run_dir: std::env::temp_dir().join("nanovnf"),
            netns: None,
            qemu_binary: PathBuf::from(DEFAULT_QEMU_BINARY),
            extra_args: Vec::new(),
            control: false,
        }
    }

    /// Sets [`VmSpec::machine`].
    pub fn machine(mut self, machine: Machine) -> Self {
        self.machine = machine;
        self
    }

    /// Sets [`VmSpec::accel`].
    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// Sets [`VmSpec::memory_mib`].
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Adds a NIC after the existing ones.
    pub fn nic(mut self, nic: Nic) -> Self {
        self.nics.push(nic);
        self
    }

    /// Sets [`VmSpec::config`].
    pub fn config(mut self, blob: impl Into<Vec<u8>>) -> Self {
        self.config = Some(blob.into());
        self
    }

    /// Sets [`VmSpec::append`].
    pub fn append(mut self, cmdline: impl Into<String>) -> Self {
        self.append = cmdline.into();
        self
    }

    /// Sets [`VmSpec::run_dir`].
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = dir.into();
        self
    }

    /// Sets [`VmSpec::netns`].
    pub fn netns(mut self, netns: impl Into<String>) -> Self {
        self.netns = Some(netns.into());
        self
    }

    /// Sets [`VmSpec::qemu_binary`].
    pub fn qemu_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.qemu_binary = binary.into();
        self
    }

    /// Adds one argument to [`VmSpec::extra_args`].
    pub fn extra_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Adds the control channel (see [`VmSpec::control`]).
    pub fn control(mut self, on: bool) -> Self {
        self.control = on;
        self
    }

    /// The control channel's unix socket: `<run_dir>/<name>.ctl`.
    pub fn control_socket_path(&self) -> PathBuf {
        self.run_file("ctl")
    }

    /// Where the guest's serial output goes: `<run_dir>/<name>.serial`.
    pub fn serial_log_path(&self) -> PathBuf {
        self.run_file("serial")
    }

    /// Where QEMU's own stdout and stderr go: `<run_dir>/<name>.qemu.log`.
    pub fn qemu_log_path(&self) -> PathBuf {
        self.run_file("qemu.log")
    }

    /// Where the boot configuration blob is written: `<run_dir>/<name>.config`.
    pub fn config_path(&self) -> PathBuf {
        self.run_file("config")
    }

    fn run_file(&self, ext: &str) -> PathBuf {
        self.run_dir.join(format!("{}.{ext}", self.name))
    }

    /// The RAM QEMU is given: the spec's, raised to the machine's minimum.
    pub fn effective_memory_mib(&self) -> u32 {
        self.memory_mib.max(self.machine.min_memory_mib())
    }

    /// The arguments passed to [`VmSpec::qemu_binary`] (the binary itself not included).
    pub fn command_line(&self, accel: ResolvedAccel) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut opt = |flag: &str, value: Option<String>| {
            args.push(flag.to_owned());
            args.extend(value);
        };
        opt("-M", Some(self.machine.machine_arg().to_owned()));
        opt("-accel", Some(accel.as_str().to_owned()));
        opt("-no-user-config", None);
        opt("-nodefaults", None);
        opt("-display", Some("none".to_owned()));
        opt("-no-reboot", None);
        opt("-m", Some(format!("{}M", self.effective_memory_mib())));
        opt("-kernel", Some(path_arg(&self.kernel)));
        if !self.append.is_empty() {
            opt("-append", Some(self.append.clone()));
        }
        if self.config.is_some() {
            let file = opt_escape(&path_arg(&self.config_path()));
            let name = nanovnf_schema::FW_CFG_NAME;
            opt("-fw_cfg", Some(format!("name={name},file={file}")));
        }
        let port = DEBUG_EXIT_PORT;
        opt(
            "-device",
            Some(format!("isa-debug-exit,iobase={port:#x},iosize=4")),
        );
        // `-serial file:` takes the rest of the string literally: no escaping.
        let serial = path_arg(&self.serial_log_path());
        opt("-serial", Some(format!("file:{serial}")));
        if self.control {
            let path = opt_escape(&path_arg(&self.control_socket_path()));
            opt(
                "-chardev",
                Some(format!("socket,id=ctl,path={path},server=on,wait=off")),
            );
            opt(
                "-device",
                Some("isa-serial,chardev=ctl,iobase=0x2f8,irq=3".to_owned()),
            );
        }
        if self.machine == Machine::Microvm {
            // Modern (version 2) virtio-mmio, which virtio-drivers expects.
            opt("-global", Some("virtio-mmio.force-legacy=false".to_owned()));
        }
        for (i, nic) in self.nics.iter().enumerate() {
            let tap = opt_escape(&nic.tap);
            opt(
                "-netdev",
                Some(format!("tap,id=n{i},ifname={tap},script=no,downscript=no")),
            );
            let mac = format_mac(nic.mac);
            let mut device = match self.machine {
                Machine::Microvm => format!("virtio-net-device,netdev=n{i},mac={mac}"),
                Machine::Q35 => format!("virtio-net-pci,netdev=n{i},mac={mac},disable-legacy=on"),
            };
            if !nic.offloads {
                device.push_str(NO_OFFLOADS);
            }
            opt("-device", Some(device));
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts the VM: resolves the accelerator, prepares `run_dir` (config file, fresh
    /// serial and QEMU logs), and runs QEMU in its own process group (inside `netns` if set).
    /// The returned [`Vm`] kills the whole group when dropped.
    pub fn spawn(&self) -> Result<Vm, Error> {
        self.validate()?;
        let (accel, why) = self.accel.resolve()?;
        // Opened before forking: the child may only do async-signal-safe work.
        let netns_fd = match &self.netns {
            Some(ns) => Some(netns::open(&self.name, ns)?),
            None => None,
        };

        fs::create_dir_all(&self.run_dir).map_err(|e| {
            Error::io(
                format!("create run directory {}", self.run_dir.display()),
                e,
            )
        })?;
        if let Some(blob) = &self.config {
            let path = self.config_path();
            fs::write(&path, blob)
                .map_err(|e| Error::io(format!("write boot config {}", path.display()), e))?;
        }
        let control_socket = self.control.then(|| self.control_socket_path());
        if let Some(path) = &control_socket {
            // A socket left by an earlier run would make QEMU's bind fail.
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("remove stale control socket {}", path.display()),
                        e,
                    ));
                }
            }
        }
        // QEMU truncates the serial log itself, but only once it runs; truncating here
        // keeps a reader from seeing the previous boot's lines in the meantime.
        let serial_path = self.serial_log_path();
        let serial = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&serial_path)
            .map_err(|e| Error::io(format!("create serial log {}", serial_path.display()), e))?;
        let qemu_log_path = self.qemu_log_path();
        let qemu_log = File::create(&qemu_log_path)
            .map_err(|e| Error::io(format!("create QEMU log {}", qemu_log_path.display()), e))?;
        let qemu_stderr = qemu_log
            .try_clone()
            .map_err(|e| Error::io(format!("duplicate QEMU log {}", qemu_log_path.display()), e))?;

        let args = self.command_line(accel);
        log::info!(
            "starting VM `{}` with {accel} ({why}): {} {}",
            self.name,
            self.qemu_binary.display(),
            args.join(" ")
        );
        let mut cmd = Command::new(&self.qemu_binary);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(qemu_log))
            .stderr(Stdio::from(qemu_stderr))
            .process_group(0);
        if let Some(fd) = &netns_fd {
            enter_netns_on_exec(&mut cmd, fd);
        }
        let child = cmd.spawn().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::QemuMissing {
                    binary: self.qemu_binary.clone(),
                }
            } else {
                Error::Spawn {
                    vm: self.name.clone(),
                    source: e,
                }
            }
        })?;
        // The child has entered the namespace (or failed to start); our copy can go.
        drop(netns_fd);
        let mut vm = Vm::new(
            self.name.clone(),
            child,
            accel,
            why,
            serial,
            serial_path,
            qemu_log_path,
        );
        vm.control_socket = control_socket;
        Ok(vm)
    }

    /// Refuses specs that would make QEMU misbehave in ways that are hard to trace.
    fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidSpec {
            vm: self.name.clone(),
            reason,
        };
        let name_ok = !self.name.is_empty()
            && !self.name.starts_with('.')
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(invalid(format!(
                "the name {:?} must be non-empty, not start with `.`, and use only letters, \
                 digits, `-`, `_` and `.` (it names files in the run directory)",
                self.name
            )));
        }
        if !self.kernel.is_file() {
            return Err(invalid(format!(
                "the kernel image {} does not exist or is not a file",
                self.kernel.display()
            )));
        }
        // sun_path holds 108 bytes including the terminating NUL.
        let socket = self.control_socket_path();
        if self.control && socket.as_os_str().len() > 107 {
            return Err(invalid(format!(
                "the control socket path {} is longer than a unix socket allows (107 bytes); \
                 use a shorter run directory",
                socket.display()
            )));
        }
        for nic in &self.nics {
            // IFNAMSIZ is 16 including the terminating NUL.
            if nic.tap.is_empty() || nic.tap.len() > 15 || nic.tap.contains(['/', ',', ' ']) {
                return Err(invalid(format!(
                    "the tap name {:?} is not a valid interface name (1-15 characters, no `/`, \
                     `,` or spaces)",
                    nic.tap
                )));
            }
        }
        Ok(())
    }
}

/// Makes the child join the network namespace `fd` between fork and exec.
fn enter_netns_on_exec(cmd: &mut Command, fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    let hook = move || {
        // SAFETY: setns(2) only reads its integer arguments; `raw` stays open in the parent
        // (and so in this forked child) until spawn() has returned.
        if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } == -1 {
            // An OS error carries only the errno: no allocation.
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec. It calls only setns(2) and
    // reads errno, both async-signal-safe, and neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// A path as a QEMU argument. Paths that are not UTF-8 are passed lossily; run
/// directories and images are expected to have plain names.
fn path_arg(path: &Path) -> String {
    path.as_os_str().to_string_lossy().into_owned()
}

/// Escapes a value inside a QEMU `key=value,...` option string, where `,,` is a comma.
fn opt_escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Finds `binary` the way `execvp` would: as given when it contains a `/`, else on `PATH`.
pub(crate) fn find_binary(binary: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if binary.as_os_str().as_encoded_bytes().contains(&b'/') {
        return is_exec(binary).then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|p| is_exec(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xab, 0x0c, 0x01];

    fn spec() -> VmSpec {
        VmSpec::new("dhcp-1", "/images/dhcp.elf").run_dir("/run/nanovnf")
    }

    fn joined(spec: &VmSpec, accel: ResolvedAccel) -> String {
        spec.command_line(accel).join(" ")
    }

    #[test]
    fn microvm_minimal_command_line() {
        assert_eq!(
            spec().command_line(ResolvedAccel::Tcg),
            [
                "-M",
                "microvm,acpi=off,x-option-roms=off,isa-serial=on,rtc=off",
                "-accel",
                "tcg",
                "-no-user-config",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
                "-m",
                "4M",
                "-kernel",
                "/images/dhcp.elf",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=4",
                "-serial",
                "file:/run/nanovnf/dhcp-1.serial",
                "-global",
                "virtio-mmio.force-legacy=false",
            ]
        );
    }

    #[test]
    fn accel_is_passed_through() {
        assert!(joined(&spec(), ResolvedAccel::Kvm).contains("-accel kvm "));
        assert!(joined(&spec(), ResolvedAccel::Tcg).contains("-accel tcg "));
    }

    #[test]
    fn microvm_nics_are_virtio_mmio_devices() {
        let spec = spec()
            .nic(Nic::new("tap-a", MAC))
            .nic(Nic::new("tap-b", [2, 0, 0, 0, 0, 0xff]));
        let args = spec.command_line(ResolvedAccel::Kvm);
        let tail: Vec<&str> = args[args.len() - 8..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "-netdev",
                "tap,id=n0,ifname=tap-a,script=no,downscript=no",
                "-device",
                "virtio-net-device,netdev=n0,mac=52:54:00:ab:0c:01",
                "-netdev",
                "tap,id=n1,ifname=tap-b,script=no,downscript=no",
                "-device",
                "virtio-net-device,netdev=n1,mac=02:00:00:00:00:ff",
            ]
        );
    }

    #[test]
    fn q35_uses_pci_nics_and_no_microvm_options() {
        let spec = spec().machine(Machine::Q35).nic(Nic::new("tap-a", MAC));
        let line = joined(&spec, ResolvedAccel::Tcg);
        assert!(line.starts_with("-M q35 -accel tcg "), "{line}");
        assert!(line.contains(
            "-netdev tap,id=n0,ifname=tap-a,script=no,downscript=no \
             -device virtio-net-pci,netdev=n0,mac=52:54:00:ab:0c:01,disable-legacy=on"
        ));
        assert!(!line.contains("microvm"));
        assert!(!line.contains("virtio-mmio"));
        assert!(line.contains("-device isa-debug-exit,iobase=0xf4,iosize=4"));
    }

    #[test]
    fn memory_is_raised_to_the_machine_minimum() {
        assert!(joined(&spec().memory_mib(1), ResolvedAccel::Tcg).contains("-m 2M "));
        assert!(joined(&spec().memory_mib(64), ResolvedAccel::Tcg).contains("-m 64M "));
        let q35 = spec().machine(Machine::Q35).memory_mib(0);
        assert!(
            joined(&q35, ResolvedAccel::Tcg)
                .contains(&format!("-m {}M ", Machine::Q35.min_memory_mib()))
        );
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(format_mac(MAC), "52:54:00:ab:0c:01");
        assert_eq!(format_mac([0xff; 6]), "ff:ff:ff:ff:ff:ff");
        assert_eq!(format_mac([0; 6]), "00:00:00:00:00:00");
    }

    #[test]
    fn config_becomes_fw_cfg_file() {
        let line = joined(&spec().config(vec![1, 2, 3]), ResolvedAccel::Tcg);
        assert!(line.contains("-fw_cfg name=opt/nanovnf/config,file=/run/nanovnf/dhcp-1.config"));
        assert!(!joined(&spec(), ResolvedAccel::Tcg).contains("-fw_cfg"));
    }

    #[test]
    fn commas_are_escaped_only_inside_option_strings() {
        let spec = spec().run_dir("/tmp/a,b").config(vec![0]);
        let line = joined(&spec, ResolvedAccel::Tcg);
        assert!(line.contains("file=/tmp/a,,b/dhcp-1.config"), "{line}");
        assert!(
            line.contains("-serial file:/tmp/a,b/dhcp-1.serial"),
            "{line}"
        );
    }

    #[test]
    fn append_only_when_non_empty() {
        assert!(!joined(&spec(), ResolvedAccel::Tcg).contains("-append"));
        let args = spec()
            .append("log=debug role=dhcp")
            .command_line(ResolvedAccel::Tcg);
        let i = args.iter().position(|a| a == "-append").expect("-append");
        assert_eq!(args[i + 1], "log=debug role=dhcp");
    }

    #[test]
    fn extra_args_come_last() {
        let args = spec()
            .nic(Nic::new("t0", MAC))
            .extra_arg("-S")
            .extra_arg("-s")
            .command_line(ResolvedAccel::Tcg);
        assert_eq!(&args[args.len() - 2..], ["-S", "-s"]);
    }

    #[test]
    fn never_asks_for_the_host_cpu() {
        let line = joined(&spec().machine(Machine::Q35), ResolvedAccel::Kvm);
        assert!(!line.contains("-cpu"));
    }

    #[test]
    fn run_files_are_named_after_the_vm() {
        let s = spec();
        assert_eq!(s.serial_log_path(), Path::new("/run/nanovnf/dhcp-1.serial"));
        assert_eq!(s.qemu_log_path(), Path::new("/run/nanovnf/dhcp-1.qemu.log"));
        assert_eq!(s.config_path(), Path::new("/run/nanovnf/dhcp-1.config"));
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "../x", "a/b", ".hidden", "has space"] {
            let mut s = spec();
            s.name = name.to_owned();
            assert!(
                matches!(s.validate(), Err(Error::InvalidSpec { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn bad_tap_names_are_refused() {
        let kernel = std::env::current_exe().expect("test binary path");
        for tap in ["", "sixteen-chars-xx", "a,b"] {
            let s = VmSpec::new("vm", &kernel).nic(Nic::new(tap, MAC));
            assert!(
                matches!(s.validate(), Err(Error::InvalidSpec { .. })),
                "{tap:?}"
            );
        }
        assert!(
            VmSpec::new("vm", &kernel)
                .nic(Nic::new("tap0", MAC))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn find_binary_searches_path() {
        assert!(find_binary(Path::new("sh")).is_some());
        assert!(find_binary(Path::new("/bin/sh")).is_some());
        assert!(find_binary(Path::new("nanovnf-no-such-binary")).is_none());
        assert!(find_binary(Path::new("/nonexistent/qemu")).is_none());
    }
}
