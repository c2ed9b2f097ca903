//! Which samples each data-parallel rank reads, Megatron's `MegatronPretrainingSampler`
//! (`--dataloader-type single`): the dataset is already shuffled, so the sampler walks it in
//! order from `consumed_samples`, cutting `micro_batch × data_parallel_size` samples at a time
//! and giving rank `r` its `micro_batch` slice. Resuming is starting again with the consumed
//! count a checkpoint recorded: the batches that follow are the ones an uninterrupted run reads.

use crate::{Error, Result};

/// The micro-batches of sample indices one rank reads.
#[derive(Clone, Debug)]
pub struct PretrainingSampler {
    next: u64,
    total: u64,
    micro_batch: u64,
    rank: u64,
    ranks: u64,
    drop_last: bool,
}

impl PretrainingSampler {
    /// A sampler over `total` samples for rank `rank` of `ranks`, resuming after `consumed`
    /// samples (all ranks together), dropping a last incomplete step as Megatron does.
    pub fn new(total: u64, consumed: u64, micro_batch: u64, rank: u64, ranks: u64) -> Result<Self> {
        let bad = |why: String| Err(Error::Invalid(format!("sampler: {why}")));
        if total == 0 {
            return bad("no sample to consume".into());
        }
        if consumed >= total {
            return bad(format!("{consumed} samples consumed of {total}: none left"));
        }
        if micro_batch == 0 || ranks == 0 {
            return bad("micro batch and data-parallel size must be at least 1".into());
        }
        if rank >= ranks {
            return bad(format!("data-parallel rank {rank} of a world of {ranks}"));
        }
        Ok(PretrainingSampler {
            next: consumed,
            total,
            micro_batch,
            rank,
            ranks,
            drop_last: true,
        })
    }

    /// Keep a last, incomplete step (Megatron's `drop_last=False`, as for full validation).
    pub fn keep_last(mut self) -> Self {
        self.drop_last = false;
        self
    }

    /// Samples consumed by all ranks so far: what a checkpoint records.
    pub fn consumed(&self) -> u64 {
        self.next
    }
}

impl Iterator for PretrainingSampler {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let step = self.micro_batch * self.ranks;
        let left = self.total.saturating_sub(self.next);
        if left == 0 || (left < step && self.drop_last) {
            return None;
        }
        let start = self.next + self.rank * self.micro_batch;
        let end = (start + self.micro_batch).min(self.total);
        self.next += step.min(left);
        Some((start.min(end)..end).map(|i| i as usize).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_split_each_step_and_resume_continues() {
        let rank = |r| PretrainingSampler::new(20, 0, 2, r, 3).unwrap();
        assert_eq!(
            rank(0).collect::<Vec<_>>(),
            [vec![0, 1], vec![6, 7], vec![12, 13]]
        );
        assert_eq!(
            rank(2).collect::<Vec<_>>(),
            [vec![4, 5], vec![10, 11], vec![16, 17]]
        );
        let kept: Vec<_> = rank(0).keep_last().collect();
        assert_eq!(kept.last(), Some(&vec![18, 19]));
        let kept2: Vec<_> = rank(2).keep_last().collect();
        assert_eq!(
            kept2.last(),
            Some(&vec![]),
            "a rank past the end gets an empty batch"
        );

        let mut run = PretrainingSampler::new(1000, 0, 4, 1, 2).unwrap();
        for _ in 0..7 {
            run.next();
        }
        let consumed = run.consumed();
        assert_eq!(consumed, 56);
        let resumed = PretrainingSampler::new(1000, consumed, 4, 1, 2).unwrap();
        assert!(run.eq(resumed));
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(PretrainingSampler::new(0, 0, 1, 0, 1).is_err());
        assert!(PretrainingSampler::new(10, 10, 1, 0, 1).is_err());
        assert!(PretrainingSampler::new(10, 0, 1, 2, 2).is_err());
        assert!(PretrainingSampler::new(10, 0, 0, 0, 1).is_err());
    }
}
