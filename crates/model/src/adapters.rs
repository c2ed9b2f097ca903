//! What a machine has to compute on: the Vulkan adapters wgpu sees (the GPU path on Linux),
//! and how much memory a device offers, so that a device that cannot be opened is named with
//! the adapters found and a model too large for its device is refused before it is loaded.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use burn::backend::wgpu::wgpu;

/// A graphics adapter as its driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// The driver's name for it ("NVIDIA H100 80GB HBM3", "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub name: String,
    /// What the driver says it is.
    pub kind: AdapterKind,
    /// The driver and its version, as reported.
    pub driver: String,
    /// The largest device-local memory heap, in bytes (for a CPU adapter, host memory).
    pub memory_bytes: Option<u64>,
}

/// An adapter's type, as wgpu's `DeviceType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterKind {
    /// A GPU card with memory of its own.
    Discrete,
    /// A GPU sharing the host's memory.
    Integrated,
    /// A virtualised GPU.
    Virtual,
    /// Software rendering on the CPU (Mesa's lavapipe): slower than the CPU engine.
    Cpu,
    /// Anything else.
    Other,
}

impl fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdapterKind::Discrete => "discrete GPU",
            AdapterKind::Integrated => "integrated GPU",
            AdapterKind::Virtual => "virtual GPU",
            AdapterKind::Cpu => "CPU",
            AdapterKind::Other => "other",
        })
    }
}

impl fmt::Display for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, self.kind)?;
        if !self.driver.trim().is_empty() {
            write!(f, ", {}", self.driver.trim())?;
        }
        if let Some(bytes) = self.memory_bytes {
            write!(f, ", {}", human_bytes(bytes))?;
        }
        f.write_str(")")
    }
}

/// Every Vulkan adapter wgpu finds, in its order (the order `wgpu:N` counts discrete GPUs in).
/// Empty where there is no Vulkan loader or driver.
pub fn wgpu_adapters() -> Vec<Adapter> {
    // One instance for the life of the process, created and used under a lock: the Vulkan
    // loader crashes when instances come and go on several threads at once (cubecl keeps
    // its own for the same reason).
    static INSTANCE: OnceLock<Mutex<wgpu::Instance>> = OnceLock::new();
    let instance = INSTANCE.get_or_init(|| {
        Mutex::new(wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        }))
    });
    let instance = instance.lock().unwrap_or_else(|e| e.into_inner());
    block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN))
        .iter()
        .map(describe)
        .collect()
}

/// The adapter burn's `wgpu` device `kind_index` opens, by cubecl's rule: `wgpu:N` is the
/// N-th discrete GPU, plain `wgpu` the high-performance choice (a discrete GPU, else an
/// integrated one, else anything, the CPU last).
pub fn pick(adapters: &[Adapter], discrete_index: Option<usize>) -> Option<&Adapter> {
    match discrete_index {
        Some(n) => adapters
            .iter()
            .filter(|a| a.kind == AdapterKind::Discrete)
            .nth(n),
        None => [
            AdapterKind::Discrete,
            AdapterKind::Integrated,
            AdapterKind::Virtual,
            AdapterKind::Other,
            AdapterKind::Cpu,
        ]
        .iter()
        .find_map(|kind| adapters.iter().find(|a| a.kind == *kind)),
    }
}

/// The adapters found, for an error message.
pub fn listing(adapters: &[Adapter]) -> String {
    if adapters.is_empty() {
        return "wgpu found no Vulkan adapter (install a Vulkan driver: the GPU vendor's, or \
                Mesa's lavapipe, mesa-vulkan-drivers, to run on the CPU)"
            .into();
    }
    let names = adapters
        .iter()
        .map(Adapter::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    format!("wgpu found: {names}")
}

fn describe(adapter: &wgpu::Adapter) -> Adapter {
    let info = adapter.get_info();
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => AdapterKind::Discrete,
        wgpu::DeviceType::IntegratedGpu => AdapterKind::Integrated,
        wgpu::DeviceType::VirtualGpu => AdapterKind::Virtual,
        wgpu::DeviceType::Cpu => AdapterKind::Cpu,
        wgpu::DeviceType::Other => AdapterKind::Other,
    };
    let driver = format!("{} {}", info.driver, info.driver_info);
    let heap = device_local_heap(adapter);
    // A software adapter computes in the host's memory, whatever heap it reports (lavapipe
    // says 2 GiB); an integrated GPU's heap is the host's RAM, not what is free of it.
    let memory_bytes = match kind {
        AdapterKind::Cpu => host_available_bytes().or(heap),
        AdapterKind::Integrated => match (heap, host_available_bytes()) {
            (Some(h), Some(free)) => Some(h.min(free)),
            (h, free) => h.or(free),
        },
        _ => heap,
    };
    Adapter {
        name: info.name,
        kind,
        driver,
        memory_bytes,
    }
}

/// The largest heap the Vulkan driver marks device-local (wgpu reports no memory sizes).
#[allow(unsafe_code)]
fn device_local_heap(adapter: &wgpu::Adapter) -> Option<u64> {
    // SAFETY: the raw Vulkan handles are only read, and only while `adapter` (which owns
    // them) is borrowed; vkGetPhysicalDeviceMemoryProperties has no preconditions beyond a
    // valid physical device of that instance.
    unsafe {
        let hal = adapter.as_hal::<wgpu::hal::api::Vulkan>()?;
        let raw = hal.shared_instance().raw_instance();
        let properties = raw.get_physical_device_memory_properties(hal.raw_physical_device());
        properties
            .memory_heaps
            .iter()
            .take(properties.memory_heap_count as usize)
            .filter(|h| h.flags.contains(ash::vk::MemoryHeapFlags::DEVICE_LOCAL))
            .map(|h| h.size)
            .max()
    }
}

/// Memory the host can still give this process: `MemAvailable`, or less where a cgroup
/// (a container, a Slurm job) caps it. `None` off Linux.
pub fn host_available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let available = meminfo.lines().find_map(|line| {
        let kib = line
            .strip_prefix("MemAvailable:")?
            .trim()
            .strip_suffix("kB")?;
        kib.trim().parse::<u64>().ok().map(|k| k * 1024)
    })?;
    let read = |name: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{name}"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let capped = match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(current)) => available.min(max.saturating_sub(current)),
        _ => available,
    };
    Some(capped)
}

/// `bytes` as GiB (or MiB below one GiB), for messages.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", crate::accounting::gib(b))
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// Runs a future that wgpu resolves without waiting on native platforms.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter(name: &str, kind: AdapterKind) -> Adapter {
        Adapter {
            name: name.into(),
            kind,
            driver: String::new(),
            memory_bytes: Some(3 << 30),
        }
    }

    #[test]
    fn wgpu_n_counts_discrete_gpus_and_plain_wgpu_prefers_them() {
        let found = [
            adapter("llvmpipe", AdapterKind::Cpu),
            adapter("igpu", AdapterKind::Integrated),
            adapter("a", AdapterKind::Discrete),
            adapter("b", AdapterKind::Discrete),
        ];
        assert_eq!(pick(&found, Some(1)).unwrap().name, "b");
        assert!(pick(&found, Some(2)).is_none());
        assert_eq!(pick(&found, None).unwrap().name, "a");
        assert_eq!(pick(&found[..2], None).unwrap().name, "igpu");
        assert_eq!(pick(&found[..1], None).unwrap().name, "llvmpipe");
        assert!(pick(&[], None).is_none());
    }

    #[test]
    fn listings_name_every_adapter_or_say_what_to_install() {
        let found = [adapter("llvmpipe", AdapterKind::Cpu)];
        assert_eq!(listing(&found), "wgpu found: llvmpipe (CPU, 3.00 GiB)");
        assert!(listing(&[]).contains("mesa-vulkan-drivers"));
        assert_eq!(human_bytes(512 << 20), "512.0 MiB");
    }

    #[test]
    fn the_host_has_memory_available() {
        let bytes = host_available_bytes().expect("Linux has /proc/meminfo");
        assert!(bytes > 16 << 20, "{bytes}");
    }

    #[test]
    fn listing_the_adapters_never_panics() {
        // Whatever this machine has (lavapipe in CI): every adapter has a name.
        for a in wgpu_adapters() {
            assert!(!a.name.is_empty(), "{a:?}");
        }
    }
}
