//! `--device`: the one place where a user's choice of hardware becomes a burn [`Device`].

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;

use burn::tensor::{Device, Tensor};

use crate::{Error, Result, adapters};

/// Where a subcommand computes, as written on the command line.
///
/// `flex` is burn's pure-Rust CPU backend, `wgpu` the portable GPU backend (on a machine without
/// a GPU, Mesa's lavapipe CPU Vulkan driver), `cuda:N` the N-th NVIDIA GPU (builds with
/// `--features cuda` only), and `auto` the first CUDA GPU when there is one, else flex. `auto`
/// never picks wgpu: on a CPU-only machine lavapipe is an order of magnitude slower than flex,
/// and telling a real GPU adapter from lavapipe is wgpu's guess, not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA when available, else flex.
    #[default]
    Auto,
    /// burn's pure-Rust CPU backend.
    Flex,
    /// wgpu's default adapter.
    Wgpu,
    /// wgpu's discrete GPU with this index (`wgpu:N`).
    WgpuGpu(usize),
    /// The CUDA GPU with this index.
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let spec = match s.trim().to_ascii_lowercase().as_str() {
            "auto" => DeviceSpec::Auto,
            "flex" | "cpu" => DeviceSpec::Flex,
            "wgpu" => DeviceSpec::Wgpu,
            "cuda" => DeviceSpec::Cuda(0),
            other => {
                let index = |prefix: &str| other.strip_prefix(prefix)?.parse::<usize>().ok();
                match (index("cuda:"), index("wgpu:")) {
                    (Some(i), _) => DeviceSpec::Cuda(i),
                    (_, Some(i)) => DeviceSpec::WgpuGpu(i),
                    _ => {
                        return Err(Error::UnknownDevice {
                            given: s.to_string(),
                        });
                    }
                }
            }
        };
        Ok(spec)
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Auto => f.write_str("auto"),
            DeviceSpec::Flex => f.write_str("flex"),
            DeviceSpec::Wgpu => f.write_str("wgpu"),
            DeviceSpec::WgpuGpu(index) => write!(f, "wgpu:{index}"),
            DeviceSpec::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device, checking that it can run a kernel; `auto` resolves to the spec it
    /// picked, which [`DeviceSpec::resolve_named`] returns alongside.
    pub fn resolve(self) -> Result<Device> {
        self.resolve_named().map(|(device, _)| device)
    }

    /// As [`DeviceSpec::resolve`], also saying which concrete device `auto` became.
    pub fn resolve_named(self) -> Result<(Device, DeviceSpec)> {
        match self {
            DeviceSpec::Auto => match DeviceSpec::Cuda(0).resolve_named() {
                Ok(found) => Ok(found),
                Err(_) => Ok((Device::flex(), DeviceSpec::Flex)),
            },
            DeviceSpec::Flex => Ok((Device::flex(), self)),
            DeviceSpec::Wgpu => probe(self, || {
                Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)
            }),
            DeviceSpec::WgpuGpu(index) => {
                // Refused here rather than by the backend, whose panic names no adapter; where
                // Vulkan lists nothing, wgpu may still find one through another API.
                let found = adapters::wgpu_adapters();
                if !found.is_empty() && adapters::pick(&found, Some(index)).is_none() {
                    return Err(Error::DeviceUnavailable {
                        spec: self.to_string(),
                        reason: format!(
                            "there is no discrete GPU number {index}; {}",
                            adapters::listing(&found)
                        ),
                    });
                }
                probe(self, || {
                    Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index))
                })
            }
            DeviceSpec::Cuda(index) => open_cuda(self, index),
        }
    }

    /// The device this opens, for a log line, and the memory it offers in bytes where that
    /// is known: flex's is the host's available memory, a wgpu adapter's its largest
    /// device-local heap (a CPU adapter's, the host's), CUDA's unknown to this build.
    pub fn memory(self) -> (String, Option<u64>) {
        let host = adapters::host_available_bytes;
        match self {
            DeviceSpec::Auto | DeviceSpec::Flex => ("flex (host memory)".into(), host()),
            DeviceSpec::Wgpu | DeviceSpec::WgpuGpu(_) => {
                let found = adapters::wgpu_adapters();
                let index = match self {
                    DeviceSpec::WgpuGpu(i) => Some(i),
                    _ => None,
                };
                match adapters::pick(&found, index) {
                    Some(adapter) => (format!("{self}: {adapter}"), adapter.memory_bytes),
                    None => (self.to_string(), None),
                }
            }
            DeviceSpec::Cuda(_) => (self.to_string(), None),
        }
    }

    /// The device of local rank `local_rank` of a multi-process run, when every rank on a node
    /// is given the same `--device`: it names local rank 0's, and local rank `l` takes the
    /// `l`-th after it (`cuda` → `cuda:LOCAL_RANK`, `wgpu` → `wgpu:LOCAL_RANK` past rank 0, as
    /// Megatron's `torch.cuda.set_device(local_rank)`); flex is the host's, shared.
    pub fn for_local_rank(self, local_rank: usize) -> DeviceSpec {
        match self {
            DeviceSpec::Cuda(i) => DeviceSpec::Cuda(i + local_rank),
            DeviceSpec::WgpuGpu(i) => DeviceSpec::WgpuGpu(i + local_rank),
            DeviceSpec::Wgpu if local_rank > 0 => DeviceSpec::WgpuGpu(local_rank),
            DeviceSpec::Auto => match DeviceSpec::Cuda(local_rank).resolve() {
                Ok(_) => DeviceSpec::Cuda(local_rank),
                Err(_) => DeviceSpec::Flex,
            },
            other => other,
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(spec: DeviceSpec, index: usize) -> Result<(Device, DeviceSpec)> {
    probe(spec, || Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(spec: DeviceSpec, _index: usize) -> Result<(Device, DeviceSpec)> {
    Err(Error::DeviceUnavailable {
        spec: spec.to_string(),
        reason: "this build has no CUDA support; rebuild with `--features cuda`".into(),
    })
}

/// Opens a device and runs one tiny kernel on it. burn's backends panic when no adapter or
/// driver is found (their constructors are lazy, the first kernel fails), so the panic is caught
/// here and turned into an error that names the device.
fn probe(spec: DeviceSpec, open: impl FnOnce() -> Device) -> Result<(Device, DeviceSpec)> {
    let opened = catch_unwind(AssertUnwindSafe(|| {
        let device = open();
        let sum: f32 = Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
        (device, sum)
    }));
    match opened {
        Ok((device, 4.0)) => Ok((device, spec)),
        Ok((_, sum)) => Err(Error::DeviceUnavailable {
            spec: spec.to_string(),
            reason: format!("a test kernel computed {sum} instead of 4"),
        }),
        Err(panic) => {
            let mut reason = panic_message(panic.as_ref());
            if matches!(spec, DeviceSpec::Wgpu | DeviceSpec::WgpuGpu(_)) {
                reason = format!(
                    "{reason}; {}",
                    adapters::listing(&adapters::wgpu_adapters())
                );
            }
            Err(Error::DeviceUnavailable {
                spec: spec.to_string(),
                reason,
            })
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "the backend panicked while opening the device".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_spelling() {
        let cases = [
            ("auto", DeviceSpec::Auto),
            ("flex", DeviceSpec::Flex),
            ("CPU", DeviceSpec::Flex),
            ("wgpu", DeviceSpec::Wgpu),
            ("cuda", DeviceSpec::Cuda(0)),
            (" cuda:3 ", DeviceSpec::Cuda(3)),
            ("wgpu:1", DeviceSpec::WgpuGpu(1)),
        ];
        for (text, spec) in cases {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec, "{text}");
        }
    }

    #[test]
    fn rejects_unknown_devices_by_name() {
        for text in ["", "gpu", "cuda:", "cuda:-1", "cuda:x", "wgpu:", "metal"] {
            let err = text.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(err.contains(&format!("`{text}`")), "{err}");
            assert!(err.contains("flex, wgpu[:N], cuda:N or auto"), "{err}");
        }
    }

    #[test]
    fn local_ranks_take_the_devices_after_the_given_one() {
        assert_eq!(DeviceSpec::Cuda(0).for_local_rank(3), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Cuda(2).for_local_rank(1), DeviceSpec::Cuda(3));
        assert_eq!(DeviceSpec::Wgpu.for_local_rank(0), DeviceSpec::Wgpu);
        assert_eq!(DeviceSpec::Wgpu.for_local_rank(2), DeviceSpec::WgpuGpu(2));
        assert_eq!(DeviceSpec::Flex.for_local_rank(5), DeviceSpec::Flex);
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_an_error_and_auto_falls_back_to_flex() {
        let err = DeviceSpec::Cuda(0).resolve().unwrap_err().to_string();
        assert!(
            err.contains("cuda:0") && err.contains("--features cuda"),
            "{err}"
        );
        let (_, picked) = DeviceSpec::Auto.resolve_named().unwrap();
        assert_eq!(picked, DeviceSpec::Flex);
    }

    proptest! {
        #[test]
        fn display_roundtrips(index in 0usize..64, which in 0u8..5) {
            let spec = match which {
                0 => DeviceSpec::Auto,
                1 => DeviceSpec::Flex,
                2 => DeviceSpec::Wgpu,
                3 => DeviceSpec::WgpuGpu(index),
                _ => DeviceSpec::Cuda(index),
            };
            prop_assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,40}") {
            let _ = text.parse::<DeviceSpec>();
        }
    }
}
