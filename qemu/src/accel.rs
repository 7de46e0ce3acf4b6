//! Choosing the accelerator. On real hardware KVM wins; on this project's development hosts
//! KVM is a nested `kvm_pvm` that runs our guests far slower than TCG, so `Auto` prefers TCG
//! there. The decision is a pure function of what the host offers, so it is unit-tested.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use crate::Error;

/// Environment variable that overrides [`Accel::Auto`]: `kvm`, `tcg` or `auto`.
pub const ACCEL_ENV: &str = "NANOVNF_ACCEL";

/// Present when the host's KVM is the nested `kvm_pvm` module.
const KVM_PVM_MODULE: &str = "/sys/module/kvm_pvm";

const DEV_KVM: &str = "/dev/kvm";

/// The accelerator a VM asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Let the host decide; see [`Accel::resolve`].
    #[default]
    Auto,
    /// Hardware virtualisation; fails if `/dev/kvm` cannot be used.
    Kvm,
    /// QEMU's software emulator; always available.
    Tcg,
}

/// The accelerator a VM actually runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    /// `-accel kvm`
    Kvm,
    /// `-accel tcg`
    Tcg,
}

impl ResolvedAccel {
    /// The name QEMU's `-accel` option takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "tcg",
        }
    }
}

impl fmt::Display for ResolvedAccel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Accel {
    /// Decides the accelerator on this host and says why.
    ///
    /// `Auto` picks TCG when `/sys/module/kvm_pvm` exists (this nested KVM runs guests far
    /// slower than TCG), KVM when `/dev/kvm` can be opened read-write, and TCG otherwise.
    /// `NANOVNF_ACCEL=kvm|tcg|auto` overrides `Auto`; an explicit `Kvm` or `Tcg` wins over
    /// the environment. Asking for KVM when `/dev/kvm` is unusable is an error naming why.
    pub fn resolve(self) -> Result<(ResolvedAccel, &'static str), Error> {
        let env = std::env::var(ACCEL_ENV).ok();
        let kvm_pvm = Path::new(KVM_PVM_MODULE).exists();
        let dev_kvm = OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEV_KVM)
            .map(drop);
        decide(self, env.as_deref(), kvm_pvm, dev_kvm)
    }
}

/// The pure part of [`Accel::resolve`]: `dev_kvm` is the outcome of opening `/dev/kvm`
/// read-write.
pub(crate) fn decide(
    requested: Accel,
    env: Option<&str>,
    kvm_pvm_present: bool,
    dev_kvm: io::Result<()>,
) -> Result<(ResolvedAccel, &'static str), Error> {
    match requested {
        Accel::Kvm => return use_kvm(dev_kvm, "KVM requested by the VM spec"),
        Accel::Tcg => return Ok((ResolvedAccel::Tcg, "TCG requested by the VM spec")),
        Accel::Auto => {}
    }
    let env = env.map(str::trim).filter(|v| !v.is_empty());
    match env.map(str::to_ascii_lowercase).as_deref() {
        Some("kvm") => return use_kvm(dev_kvm, "NANOVNF_ACCEL=kvm"),
        Some("tcg") => return Ok((ResolvedAccel::Tcg, "NANOVNF_ACCEL=tcg")),
        Some("auto") | None => {}
        Some(_) => {
            return Err(Error::BadAccelOverride {
                value: env.unwrap_or_default().to_owned(),
            });
        }
    }
    if kvm_pvm_present {
        Ok((
            ResolvedAccel::Tcg,
            "kvm_pvm (nested KVM) is loaded and runs guests slower than TCG",
        ))
    } else if dev_kvm.is_ok() {
        Ok((ResolvedAccel::Kvm, "/dev/kvm is usable"))
    } else {
        Ok((ResolvedAccel::Tcg, "/dev/kvm is not usable"))
    }
}

/// KVM was asked for explicitly (`why`): use it, or say why it cannot be.
fn use_kvm(
    dev_kvm: io::Result<()>,
    why: &'static str,
) -> Result<(ResolvedAccel, &'static str), Error> {
    match dev_kvm {
        Ok(()) => Ok((ResolvedAccel::Kvm, why)),
        Err(e) => Err(Error::KvmUnavailable {
            reason: format!("{why}, but {DEV_KVM} cannot be opened read-write"),
            source: Some(e),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied() -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }

    fn accel(r: Result<(ResolvedAccel, &'static str), Error>) -> ResolvedAccel {
        r.expect("resolves").0
    }

    #[test]
    fn auto_prefers_tcg_under_kvm_pvm() {
        assert_eq!(
            accel(decide(Accel::Auto, None, true, Ok(()))),
            ResolvedAccel::Tcg
        );
    }

    #[test]
    fn auto_uses_kvm_on_real_hardware() {
        let (a, why) = decide(Accel::Auto, None, false, Ok(())).unwrap();
        assert_eq!(a, ResolvedAccel::Kvm);
        assert!(why.contains("/dev/kvm"));
    }

    #[test]
    fn auto_falls_back_to_tcg_without_dev_kvm() {
        assert_eq!(
            accel(decide(Accel::Auto, None, false, denied())),
            ResolvedAccel::Tcg
        );
    }

    #[test]
    fn env_overrides_auto() {
        assert_eq!(
            accel(decide(Accel::Auto, Some("kvm"), true, Ok(()))),
            ResolvedAccel::Kvm
        );
        assert_eq!(
            accel(decide(Accel::Auto, Some(" TCG "), false, Ok(()))),
            ResolvedAccel::Tcg
        );
        assert_eq!(
            accel(decide(Accel::Auto, Some("auto"), false, Ok(()))),
            ResolvedAccel::Kvm
        );
        assert_eq!(
            accel(decide(Accel::Auto, Some(""), true, Ok(()))),
            ResolvedAccel::Tcg
        );
    }

    #[test]
    fn explicit_request_beats_env() {
        assert_eq!(
            accel(decide(Accel::Tcg, Some("kvm"), false, Ok(()))),
            ResolvedAccel::Tcg
        );
        assert_eq!(
            accel(decide(Accel::Kvm, Some("tcg"), true, Ok(()))),
            ResolvedAccel::Kvm
        );
    }

    #[test]
    fn kvm_without_dev_kvm_is_an_error_naming_the_cause() {
        for (requested, env) in [(Accel::Kvm, None), (Accel::Auto, Some("kvm"))] {
            let err = decide(requested, env, false, denied()).unwrap_err();
            assert!(matches!(
                err,
                Error::KvmUnavailable {
                    source: Some(_),
                    ..
                }
            ));
            assert!(err.to_string().contains("/dev/kvm"), "{err}");
        }
    }

    #[test]
    fn bad_env_value_is_refused() {
        let err = decide(Accel::Auto, Some("hvf"), false, Ok(())).unwrap_err();
        assert!(matches!(err, Error::BadAccelOverride { ref value } if value == "hvf"));
    }
}
