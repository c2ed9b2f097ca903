//! `--device` for decoding: which engine runs a checkpoint, and where.
//!
//! `cpu` is the CPU engine ([`CpuGpt`], quantized weights read as codes); `flex`, `wgpu[:N]`
//! and `cuda[:N]` the device engine ([`DeviceGpt`], quantized weights dequantized on load);
//! `auto` a real GPU when there is one — CUDA, else a discrete wgpu adapter, never lavapipe,
//! which wgpu reports as a CPU device and which is slower than the CPU engine — and the CPU
//! engine otherwise.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use burn::tensor::FloatDType;

use lmforge_model::{DeviceSpec, GptConfig};

use crate::scheduler::{Engine, EngineOptions, Metrics};
use crate::{Batched, Beam, CpuGpt, DeviceGpt, Error, KvStore, Result, beam_search};

/// Where decoding runs, as `--device` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// A real GPU when there is one, else the CPU engine.
    #[default]
    Auto,
    /// The CPU engine.
    Cpu,
    /// The device engine on this burn device.
    Device(DeviceSpec),
}

impl FromStr for Placement {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Placement::Cpu),
            "auto" => Ok(Placement::Auto),
            _ => match s.parse::<DeviceSpec>() {
                Ok(spec) => Ok(Placement::Device(spec)),
                Err(_) => Err(Error::config(
                    "device",
                    format!("`{s}` is not a device: cpu, flex, wgpu[:N], cuda[:N] or auto"),
                )),
            },
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Auto => f.write_str("auto"),
            Placement::Cpu => f.write_str("cpu"),
            Placement::Device(spec) => spec.fmt(f),
        }
    }
}

impl Placement {
    /// `auto` made concrete (opening the GPU it finds); others as they are.
    pub fn resolve(self) -> Placement {
        if self != Placement::Auto {
            return self;
        }
        for spec in [DeviceSpec::Cuda(0), DeviceSpec::WgpuGpu(0)] {
            if spec.resolve().is_ok() {
                return Placement::Device(spec);
            }
        }
        Placement::Cpu
    }

    /// What it names, for a log line: the adapter and its memory for wgpu (the line `auto`
    /// prints to say what it picked).
    pub fn describe(self) -> String {
        match self {
            Placement::Device(spec) => spec.memory().0,
            Placement::Cpu => "cpu (the CPU engine)".into(),
            Placement::Auto => self.resolve().describe(),
        }
    }
}

/// What the device engine holds its weights, keys and values in (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats (the CPU engine's only float type).
    #[default]
    F32,
    /// IEEE half: half the memory (on wgpu, adapters with `SHADER_F16`).
    F16,
    /// bfloat16 (flex and CUDA; no wgpu adapter has it).
    Bf16,
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Precision::F32),
            "f16" | "fp16" => Ok(Precision::F16),
            "bf16" => Ok(Precision::Bf16),
            _ => Err(Error::config("dtype", format!("`{s}`: f32, f16 or bf16"))),
        }
    }
}

impl Precision {
    fn float(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }
}

/// A checkpoint loaded into the engine its [`Placement`] names.
#[derive(Debug, Clone)]
pub enum Loaded {
    /// The CPU engine.
    Cpu(Arc<CpuGpt>),
    /// The device engine.
    Device(Arc<DeviceGpt>),
}

impl Loaded {
    /// Loads `checkpoint` (f32 or quantized, lmforge's or a Hugging Face GPT-2 folder) for
    /// `placement` (`auto` resolved first), the device engine's weights in `precision`, with
    /// `kv_cache_bytes` to be given to its KV pool (0 where the caller sizes the pool by the
    /// work). A device that cannot be opened is an error naming it, why, and the adapters
    /// found; a model that does not fit the memory its device has free is refused before its
    /// weights are read ([`Error::TooLarge`]).
    pub fn load(
        checkpoint: &Path,
        placement: Placement,
        precision: Precision,
        kv_cache_bytes: usize,
    ) -> Result<Loaded> {
        match placement.resolve() {
            Placement::Device(spec) => {
                let device = spec.resolve()?;
                let config = lmforge_model::gpt_config(checkpoint)?;
                let (name, available) = spec.memory();
                let weights = device_weight_bytes(&config, precision);
                fits(name.clone(), weights, kv_cache_bytes, available)?;
                let model = lmforge_quant::load_gpt(checkpoint, &device)?;
                let engine = DeviceGpt::with_dtype(model, device, precision.float()).named(name);
                Ok(Loaded::Device(Arc::new(engine)))
            }
            Placement::Cpu | Placement::Auto => {
                if precision != Precision::F32 {
                    return Err(Error::config(
                        "dtype",
                        "the CPU engine runs f32 or quantized weights; f16 and bf16 are the \
                         device engine's (--device flex, wgpu or cuda)",
                    ));
                }
                let weights = weight_file_bytes(checkpoint);
                let available = lmforge_model::adapters::host_available_bytes();
                fits("cpu".into(), weights, kv_cache_bytes, available)?;
                Ok(Loaded::Cpu(Arc::new(CpuGpt::load(checkpoint)?)))
            }
        }
    }

    /// The model's shape.
    pub fn config(&self) -> &GptConfig {
        match self {
            Loaded::Cpu(m) => m.config(),
            Loaded::Device(m) => crate::Batched::config(m.as_ref()),
        }
    }

    /// Starts a scheduler over it (see [`Engine::start`]).
    pub fn start(
        &self,
        options: EngineOptions,
        metrics: Arc<Metrics>,
    ) -> (Engine, std::thread::JoinHandle<()>) {
        match self {
            Loaded::Cpu(m) => Engine::start(m.clone(), options, metrics),
            Loaded::Device(m) => Engine::start(m.clone(), options, metrics),
        }
    }

    /// Bytes one KV block of `block_tokens` positions takes.
    pub fn block_bytes(&self, block_tokens: usize) -> usize {
        match self {
            Loaded::Cpu(m) => m.store(block_tokens).block_bytes(),
            Loaded::Device(m) => m.store(block_tokens).block_bytes(),
        }
    }

    /// [`beam_search`] on it, in a paged cache of its own beside the scheduler's pool.
    pub fn beam_search(
        &self,
        prompt: &[u32],
        width: usize,
        max_new_tokens: usize,
        stop_tokens: &[u32],
        length_penalty: f32,
    ) -> Result<Vec<Beam>> {
        match self {
            Loaded::Cpu(m) => beam_search(
                m.as_ref(),
                prompt,
                width,
                max_new_tokens,
                stop_tokens,
                length_penalty,
            ),
            Loaded::Device(m) => beam_search(
                m.as_ref(),
                prompt,
                width,
                max_new_tokens,
                stop_tokens,
                length_penalty,
            ),
        }
    }

    /// Where it runs, for a log line: `cpu` or the device engine's device.
    pub fn placement(&self) -> String {
        match self {
            Loaded::Cpu(_) => "cpu (the CPU engine)".into(),
            Loaded::Device(m) => format!("{} (the device engine)", m.describe()),
        }
    }
}

/// What the device engine holds for `config` in `precision`: the weights (built in f32 and
/// cast, so a half model briefly holds both) and the head's transposed copy when it is tied.
/// A quantized checkpoint is dequantized on load, so it costs what the f32 model costs.
fn device_weight_bytes(config: &GptConfig, precision: Precision) -> u64 {
    let params = config.num_params() as u64;
    let (width, cast) = match precision {
        Precision::F32 => (4, 0),
        Precision::F16 | Precision::Bf16 => (2, 2 * params),
    };
    let head = if config.tie_embeddings {
        (config.vocab_size * config.d_model) as u64 * width
    } else {
        0
    };
    params * 4 + cast + head
}

/// What the CPU engine holds: its weights as stored (f32 values or quantized codes), which
/// is the size of the checkpoint's safetensors files.
fn weight_file_bytes(checkpoint: &Path) -> u64 {
    std::fs::read_dir(checkpoint)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Refuses `weights` + `kv_cache` bytes on a device with `available` free (unknown: allowed).
fn fits(device: String, weights: u64, kv_cache: usize, available: Option<u64>) -> Result<()> {
    let needed = weights + kv_cache as u64;
    match available {
        Some(available) if needed > available => Err(Error::TooLarge {
            device,
            what: format!(
                "weights {}, KV cache {}",
                lmforge_model::adapters::human_bytes(weights),
                lmforge_model::adapters::human_bytes(kv_cache as u64)
            ),
            needed,
            available,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_cpu_is_the_cpu_engine() {
        assert_eq!("cpu".parse::<Placement>().unwrap(), Placement::Cpu);
        assert_eq!("AUTO".parse::<Placement>().unwrap(), Placement::Auto);
        assert_eq!(
            "flex".parse::<Placement>().unwrap(),
            Placement::Device(DeviceSpec::Flex)
        );
        assert_eq!(
            "wgpu:1".parse::<Placement>().unwrap(),
            Placement::Device(DeviceSpec::WgpuGpu(1))
        );
        let err = "metal".parse::<Placement>().unwrap_err().to_string();
        assert!(
            err.contains("cpu, flex, wgpu[:N], cuda[:N] or auto"),
            "{err}"
        );
        for p in ["cpu", "auto", "flex", "wgpu", "cuda:2"] {
            assert_eq!(p.parse::<Placement>().unwrap().to_string(), p);
        }
    }

    #[test]
    fn precisions_parse_and_the_cpu_engine_refuses_half() {
        assert_eq!("F16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert!("f8".parse::<Precision>().is_err());
        let err = Loaded::load(Path::new("/nonexistent"), Placement::Cpu, Precision::F16, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the CPU engine runs f32"), "{err}");
    }

    #[test]
    fn a_model_larger_than_its_device_is_refused_naming_the_bytes() {
        let err = fits("wgpu:0: gpu".into(), 3 << 30, 1 << 30, Some(2 << 30))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "the model needs 4.00 GiB on wgpu:0: gpu (weights 3.00 GiB, KV cache 1.00 GiB); \
             2.00 GiB is available there"
        );
        assert!(fits("cpu".into(), 1 << 30, 0, Some(1 << 30)).is_ok());
        assert!(fits("cuda:0".into(), u64::MAX / 2, 0, None).is_ok());
        let config = GptConfig::tiny(100);
        let f32 = device_weight_bytes(&config, Precision::F32);
        let half = device_weight_bytes(&config, Precision::F16);
        let params = config.num_params() as u64;
        assert!(f32 >= params * 4 && half >= params * 6, "{f32} {half}");
    }

    #[test]
    fn auto_never_resolves_to_flex_or_lavapipe() {
        // Whatever this machine has, `auto` is the CPU engine or a real GPU.
        match Placement::Auto.resolve() {
            Placement::Cpu | Placement::Device(DeviceSpec::Cuda(_) | DeviceSpec::WgpuGpu(_)) => {}
            other => panic!("auto resolved to {other}"),
        }
    }
}
