//! The learning-rate schedule: Megatron-LM's `OptimizerParamScheduler.get_lr` — linear warmup
//! from 0 to `max_lr`, then cosine, linear or no decay to `min_lr` at `decay_steps`, `min_lr`
//! after. burn's `SequentialLrScheduler` chains the same shapes, but its linear warmup cannot
//! start at 0 and it keeps its position inside the scheduler object; a pure function of the
//! step is what an exact resume needs (the step is in the checkpoint, nothing else is).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the rate falls after warmup (`--lr-decay-style`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayStyle {
    /// Half a cosine from `max_lr` to `min_lr`.
    Cosine,
    /// A straight line from `max_lr` to `min_lr`.
    Linear,
    /// `max_lr` throughout (after warmup).
    Constant,
}

impl std::str::FromStr for DecayStyle {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(DecayStyle::Cosine),
            "linear" => Ok(DecayStyle::Linear),
            "constant" => Ok(DecayStyle::Constant),
            other => Err(Error::Config {
                field: "lr-decay-style",
                reason: format!("`{other}`: expected cosine, linear or constant"),
            }),
        }
    }
}

/// A schedule in optimizer steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// Peak rate (`--lr`).
    pub max_lr: f64,
    /// Floor (`--min-lr`).
    pub min_lr: f64,
    /// Steps of linear warmup (`--lr-warmup-iters`).
    pub warmup_steps: u64,
    /// Step at which decay reaches `min_lr` (`--lr-decay-iters`, default the training length).
    pub decay_steps: u64,
    /// Shape of the decay.
    pub style: DecayStyle,
}

impl LrSchedule {
    /// Checks the values, naming the flag that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(Error::Config { field, reason });
        if !(self.max_lr.is_finite() && self.max_lr > 0.0) {
            return bad("lr", format!("{} must be a positive number", self.max_lr));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.max_lr) {
            return bad(
                "min-lr",
                format!("{} must be between 0 and --lr {}", self.min_lr, self.max_lr),
            );
        }
        if self.style != DecayStyle::Constant && self.decay_steps <= self.warmup_steps {
            return bad(
                "lr-decay-iters",
                format!(
                    "{} must exceed the {} warmup steps",
                    self.decay_steps, self.warmup_steps
                ),
            );
        }
        Ok(())
    }

    /// The rate for optimizer step `step`, counted from 1 (Megatron's `get_lr` with
    /// `num_steps = step`: warmup reaches `max_lr` on step `warmup_steps`).
    pub fn lr(&self, step: u64) -> f64 {
        if self.warmup_steps > 0 && step <= self.warmup_steps {
            return self.max_lr * (step as f64 / self.warmup_steps as f64);
        }
        if self.style == DecayStyle::Constant {
            return self.max_lr;
        }
        if step > self.decay_steps {
            return self.min_lr;
        }
        let ratio =
            (step - self.warmup_steps) as f64 / (self.decay_steps - self.warmup_steps) as f64;
        let coefficient = match self.style {
            DecayStyle::Cosine => 0.5 * ((std::f64::consts::PI * ratio).cos() + 1.0),
            DecayStyle::Linear => 1.0 - ratio,
            DecayStyle::Constant => 1.0,
        };
        self.min_lr + coefficient * (self.max_lr - self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(style: DecayStyle) -> LrSchedule {
        LrSchedule {
            max_lr: 1.2e-4,
            min_lr: 1.2e-5,
            warmup_steps: 10,
            decay_steps: 110,
            style,
        }
    }

    #[test]
    fn the_seed_recipe_at_chosen_steps() {
        let s = schedule(DecayStyle::Cosine);
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.6e-4).abs() < 1e-18);
        assert_eq!(s.lr(10), 1.2e-4);
        // Half-way through the decay the cosine is at the mean of max and min.
        assert!((s.lr(60) - 6.6e-5).abs() < 1e-15);
        assert!((s.lr(110) - 1.2e-5).abs() < 1e-18);
        assert_eq!(s.lr(1_000), 1.2e-5);
        let quarter = 1.2e-5 + 0.5 * (1.0 + (std::f64::consts::PI * 0.25).cos()) * 1.08e-4;
        assert!((s.lr(35) - quarter).abs() < 1e-15);
    }

    #[test]
    fn linear_and_constant() {
        let s = schedule(DecayStyle::Linear);
        assert!((s.lr(60) - 6.6e-5).abs() < 1e-15);
        assert!((s.lr(85) - (1.2e-5 + 0.25 * 1.08e-4)).abs() < 1e-15);
        let c = schedule(DecayStyle::Constant);
        assert_eq!(c.lr(3), 1.2e-4 * 0.3);
        assert_eq!(c.lr(10_000), 1.2e-4);
    }

    #[test]
    fn no_warmup_starts_at_the_peak() {
        let s = LrSchedule {
            warmup_steps: 0,
            ..schedule(DecayStyle::Cosine)
        };
        assert!((s.lr(0) - 1.2e-4).abs() < 1e-18);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let s = LrSchedule {
            min_lr: 1.0,
            ..schedule(DecayStyle::Cosine)
        };
        assert!(s.validate().unwrap_err().to_string().contains("min-lr"));
        let s = LrSchedule {
            decay_steps: 5,
            ..schedule(DecayStyle::Cosine)
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("lr-decay-iters")
        );
        assert!("exp".parse::<DecayStyle>().is_err());
    }
}
