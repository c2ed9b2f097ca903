//! fp16 loss scaling, Megatron-LM's `DynamicGradScaler`: the loss is multiplied by the scale
//! before backward so that small gradients survive in half precision, the gradients are divided
//! by it before the update; an overflow (an inf or NaN gradient) skips the step and, after
//! `hysteresis` overflows, halves the scale; `growth_interval` clean steps in a row double it.
//! burn has no loss scaling (its open request #5696), so it lives here.

use serde::{Deserialize, Serialize};

/// How the scale moves.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerConfig {
    /// The first scale (`--initial-loss-scale`, Megatron's 2³²).
    pub initial_scale: f64,
    /// The scale never falls below this (`--min-loss-scale`).
    pub min_scale: f64,
    /// Clean steps before the scale doubles (`--loss-scale-window`).
    pub growth_interval: u64,
    /// Overflows tolerated before the scale halves (`--hysteresis`).
    pub hysteresis: u64,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        ScalerConfig {
            initial_scale: 4_294_967_296.0,
            min_scale: 1.0,
            growth_interval: 1000,
            hysteresis: 2,
        }
    }
}

/// The loss scale in use: none (fp32, bf16), a fixed one (`--loss-scale`) or a dynamic one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LossScaler {
    /// No scaling: a non-finite gradient is an error, not a skipped step.
    None,
    /// A fixed scale; overflowing steps are skipped.
    Static {
        /// The scale.
        scale: f64,
    },
    /// Megatron's dynamic scale.
    Dynamic {
        /// How it moves.
        config: ScalerConfig,
        /// The current scale.
        scale: f64,
        /// Clean steps since the last growth or overflow.
        growth_tracker: u64,
        /// Overflows left before the next backoff.
        hysteresis_tracker: u64,
    },
}

impl LossScaler {
    /// A dynamic scaler starting from `config.initial_scale`.
    pub fn dynamic(config: ScalerConfig) -> Self {
        LossScaler::Dynamic {
            config,
            scale: config.initial_scale,
            growth_tracker: 0,
            hysteresis_tracker: config.hysteresis,
        }
    }

    /// The factor the loss is multiplied by.
    pub fn scale(&self) -> f64 {
        match self {
            LossScaler::None => 1.0,
            LossScaler::Static { scale } | LossScaler::Dynamic { scale, .. } => *scale,
        }
    }

    /// Whether an overflow skips the step (true) or is an error (false).
    pub fn skips_overflows(&self) -> bool {
        !matches!(self, LossScaler::None)
    }

    /// Records one step's outcome: `found_inf` when a gradient was inf or NaN.
    pub fn update(&mut self, found_inf: bool) {
        let LossScaler::Dynamic {
            config,
            scale,
            growth_tracker,
            hysteresis_tracker,
        } = self
        else {
            return;
        };
        if found_inf {
            *growth_tracker = 0;
            *hysteresis_tracker = hysteresis_tracker.saturating_sub(1);
            if *hysteresis_tracker == 0 {
                *scale = (*scale * 0.5).max(config.min_scale);
            }
        } else {
            *growth_tracker += 1;
            if *growth_tracker == config.growth_interval {
                *growth_tracker = 0;
                *hysteresis_tracker = config.hysteresis;
                *scale *= 2.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> LossScaler {
        LossScaler::dynamic(ScalerConfig {
            initial_scale: 1024.0,
            min_scale: 1.0,
            growth_interval: 3,
            hysteresis: 2,
        })
    }

    #[test]
    fn grows_after_the_window_of_clean_steps() {
        let mut s = small();
        s.update(false);
        s.update(false);
        assert_eq!(s.scale(), 1024.0);
        s.update(false);
        assert_eq!(s.scale(), 2048.0);
        for _ in 0..3 {
            s.update(false);
        }
        assert_eq!(s.scale(), 4096.0);
    }

    #[test]
    fn backs_off_after_hysteresis_overflows_and_resets_growth() {
        let mut s = small();
        s.update(false);
        s.update(false);
        s.update(true);
        assert_eq!(s.scale(), 1024.0, "the first overflow is tolerated");
        s.update(true);
        assert_eq!(s.scale(), 512.0);
        s.update(true);
        assert_eq!(
            s.scale(),
            256.0,
            "without clean steps in between, every overflow halves"
        );
        // The growth counter restarted at the overflow.
        s.update(false);
        s.update(false);
        assert_eq!(s.scale(), 256.0);
        s.update(false);
        assert_eq!(s.scale(), 512.0);
    }

    #[test]
    fn never_below_the_minimum() {
        let mut s = small();
        for _ in 0..100 {
            s.update(true);
        }
        assert_eq!(s.scale(), 1.0);
    }

    #[test]
    fn static_and_none_do_not_move() {
        let mut s = LossScaler::Static { scale: 128.0 };
        s.update(true);
        s.update(false);
        assert_eq!(s.scale(), 128.0);
        assert!(s.skips_overflows());
        let mut n = LossScaler::None;
        n.update(true);
        assert_eq!(n.scale(), 1.0);
        assert!(!n.skips_overflows());
    }

    #[test]
    fn state_roundtrips_through_json() {
        let mut s = small();
        s.update(true);
        s.update(false);
        let back: LossScaler = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
