//! What data parallelism needs from the processes of a run, behind one small trait: sums over
//! all ranks and a barrier. [`Alone`] is the one-process run (every operation is the identity,
//! so single-process training is unchanged); `Mpi` (cargo feature `mpi`) carries them over
//! MPI, Open MPI from Debian on a cluster. A CUDA build would put NCCL behind the same trait:
//! its `ncclAllReduce` takes device pointers, so the gradient bucket would stay on the GPU
//! instead of going through the host as it does here (burn's flex tensors live on the host
//! anyway, and MPI reads host memory).
//!
//! Reduction order, which makes runs of one world size bit-identical: within a process the
//! micro-batches' gradients are summed in order; across processes the sum is MPI's
//! `MPI_Allreduce(MPI_SUM)`, whose algorithm Open MPI picks from the world size and the
//! message length alone (both fixed for a run: buckets are cut at fixed offsets of the
//! parameters in path order), and float addition being commutative every rank gets the same
//! bytes. Values that must not depend on the world size at all (the logged loss, evaluation
//! losses, flags) are reduced as slots: each rank fills its own and zeros elsewhere, so the
//! sum is exact and the total is then added up in one fixed order everywhere.

use crate::Result;

/// Collective operations over the ranks of a run. Every rank must call the same operations in
/// the same order with the same lengths.
pub trait Collective {
    /// This process's rank, `0..world()`.
    fn rank(&self) -> usize;

    /// Processes in the run.
    fn world(&self) -> usize;

    /// Replaces `values` by their element-wise sum over all ranks.
    fn all_reduce_f32(&self, values: &mut [f32], what: &str) -> Result<()>;

    /// Replaces `values` by their element-wise sum over all ranks.
    fn all_reduce_f64(&self, values: &mut [f64], what: &str) -> Result<()>;

    /// Sums `send` (`world()` equal blocks) over all ranks and leaves block `rank()` of the
    /// sum in `recv` (`MPI_Reduce_scatter_block`): the gradients of a sharded optimizer.
    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32], what: &str) -> Result<()>;

    /// Concatenates every rank's `send` in rank order into `recv` (`MPI_Allgather`): the
    /// updated weights of a sharded optimizer.
    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32], what: &str) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&self, what: &str) -> Result<()>;

    /// The ranks that pass the same `color`, ordered by `key`, as a collective of their own
    /// (`MPI_Comm_split`): the tensor- and data-parallel groups. Every rank must call it.
    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Collective>>;

    /// Whether any rank passes `true` (Ctrl-C on one rank, an overflow on one rank).
    fn any(&self, flag: bool, what: &str) -> Result<bool> {
        let mut v = [f64::from(u8::from(flag))];
        self.all_reduce_f64(&mut v, what)?;
        Ok(v[0] > 0.0)
    }
}

/// One process: nothing to exchange.
#[derive(Clone, Copy, Debug, Default)]
pub struct Alone;

impl Collective for Alone {
    fn rank(&self) -> usize {
        0
    }

    fn world(&self) -> usize {
        1
    }

    fn all_reduce_f32(&self, _values: &mut [f32], _what: &str) -> Result<()> {
        Ok(())
    }

    fn all_reduce_f64(&self, _values: &mut [f64], _what: &str) -> Result<()> {
        Ok(())
    }

    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32], _what: &str) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }

    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32], _what: &str) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }

    fn barrier(&self, _what: &str) -> Result<()> {
        Ok(())
    }

    fn split(&self, _color: usize, _key: usize) -> Result<Box<dyn Collective>> {
        Ok(Box::new(Alone))
    }
}

/// Elements per all-reduce of the gradients (16 MiB of f32): the one bucket size that the
/// memory accounting counts too.
pub const BUCKET_ELEMENTS: usize = lmforge_model::accounting::COLLECTIVE_BUCKET_ELEMENTS;

/// Sums `values` over all ranks in buckets of [`BUCKET_ELEMENTS`].
pub fn all_reduce_buckets(collective: &dyn Collective, values: &mut [f32]) -> Result<()> {
    if collective.world() == 1 {
        return Ok(());
    }
    for (i, bucket) in values.chunks_mut(BUCKET_ELEMENTS).enumerate() {
        collective.all_reduce_f32(bucket, &format!("the all-reduce of gradient bucket {i}"))?;
    }
    Ok(())
}

/// A 64-bit digest of `values`' bits (FNV-1a), to check that every rank holds the same weights.
pub fn digest(values: &[f32]) -> u64 {
    values.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
        (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Digest(u64);

impl burn::module::ModuleVisitor for Digest {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        let values: Vec<f32> = lmforge_model::host_values(param.val());
        self.0 = self.0.rotate_left(7) ^ digest(&values);
    }
}

/// A digest of every float parameter of `model`, in the order the module visits them.
pub fn weights_digest<M: burn::module::Module>(model: &M) -> u64 {
    let mut d = Digest(0);
    model.visit(&mut d);
    d.0
}

/// Whether every rank passed the same `value` (compared as two exact 32-bit halves).
pub fn same_everywhere(collective: &dyn Collective, value: u64, what: &str) -> Result<bool> {
    let world = collective.world();
    if world == 1 {
        return Ok(true);
    }
    // Slots: each rank writes its own, so the sum is exact.
    let mut slots = vec![0.0f64; 2 * world];
    let r = collective.rank();
    slots[2 * r] = (value >> 32) as f64;
    slots[2 * r + 1] = (value & 0xffff_ffff) as f64;
    collective.all_reduce_f64(&mut slots, what)?;
    Ok(slots.chunks(2).all(|pair| pair == [slots[0], slots[1]]))
}

#[cfg(feature = "mpi")]
pub use self::mpi_impl::Mpi;

#[cfg(feature = "mpi")]
mod mpi_impl {
    //! MPI from the `mpi` crate (rsmpi) over the system's MPI library: a well-kept binding
    //! of the library every cluster has, which `mpirun` and `srun --mpi=pmix` launch.

    use std::time::{Duration, Instant};

    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::request::{Request, Scope};
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;

    use super::Collective;
    use crate::{Error, Result};

    /// The ranks of `MPI_COMM_WORLD`. Every operation is non-blocking and polled against a
    /// deadline (Megatron's `--distributed-timeout-minutes`): a rank that died or hangs makes
    /// the others abort the run with an error naming the operation, instead of waiting forever
    /// (a launcher that sees a rank die, `mpirun` or `srun --kill-on-bad-exit`, names the
    /// rank and stops the others sooner).
    pub struct Mpi {
        world: SimpleCommunicator,
        timeout: Duration,
        // This process's rank in the whole run, which messages name (a group split off has
        // ranks of its own).
        world_rank: usize,
        // Finalizes MPI when dropped, after the communicator; `None` for a group split off.
        _universe: Option<Universe>,
    }

    impl Mpi {
        /// Initializes MPI. `expected` is the world size the launcher's environment gave: a
        /// mismatch (`srun` without `--mpi=pmix` gives every process a world of its own) is
        /// refused with the fix.
        pub fn init(expected: usize, timeout: Duration) -> Result<Mpi> {
            let universe = mpi::initialize().ok_or_else(|| Error::Distributed {
                reason: "MPI was initialised already".into(),
            })?;
            let world = universe.world();
            let size = world.size() as usize;
            if size != expected {
                return Err(Error::Distributed {
                    reason: format!(
                        "the launcher started {expected} processes but MPI sees a world of {size}: \
                         under Slurm launch with `srun --mpi=pmix`, else with `mpirun`"
                    ),
                });
            }
            let world_rank = world.rank() as usize;
            Ok(Mpi {
                world,
                timeout,
                world_rank,
                _universe: Some(universe),
            })
        }

        /// Polls `request` until it completes or the timeout passes; then aborts the whole run,
        /// since a collective that another rank never joins cannot be cancelled.
        fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, mut request: Request<'a, D, S>, what: &str) {
            let started = Instant::now();
            let mut polls = 0u32;
            loop {
                match request.test() {
                    Ok(_) => return,
                    Err(pending) => request = pending,
                }
                polls += 1;
                // Spin first (a step's all-reduce takes microseconds to milliseconds), then
                // leave the core to the other ranks.
                if polls > 10_000 {
                    std::thread::sleep(Duration::from_micros(100));
                }
                if started.elapsed() > self.timeout {
                    eprintln!(
                        "rank {}: {what} waited {:.0} s for the other ranks \
                         (--distributed-timeout-minutes): one of them died or hangs; aborting the run",
                        self.world_rank,
                        self.timeout.as_secs_f64()
                    );
                    self.world.abort(1);
                }
            }
        }

        fn sum<T: Equivalence + Copy>(&self, values: &mut [T], what: &str) {
            let send = values.to_vec();
            mpi::request::scope(|scope| {
                let request = self.world.immediate_all_reduce_into(
                    scope,
                    &send[..],
                    values,
                    SystemOperation::sum(),
                );
                self.wait(request, what);
            });
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }

        fn world(&self) -> usize {
            self.world.size() as usize
        }

        fn all_reduce_f32(&self, values: &mut [f32], what: &str) -> Result<()> {
            self.sum(values, what);
            Ok(())
        }

        fn all_reduce_f64(&self, values: &mut [f64], what: &str) -> Result<()> {
            self.sum(values, what);
            Ok(())
        }

        fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32], what: &str) -> Result<()> {
            mpi::request::scope(|scope| {
                let request = self.world.immediate_reduce_scatter_block_into(
                    scope,
                    send,
                    recv,
                    SystemOperation::sum(),
                );
                self.wait(request, what);
            });
            Ok(())
        }

        fn all_gather_f32(&self, send: &[f32], recv: &mut [f32], what: &str) -> Result<()> {
            mpi::request::scope(|scope| {
                let request = self.world.immediate_all_gather_into(scope, send, recv);
                self.wait(request, what);
            });
            Ok(())
        }

        fn barrier(&self, what: &str) -> Result<()> {
            self.wait(self.world.immediate_barrier(), what);
            Ok(())
        }

        fn split(&self, color: usize, key: usize) -> Result<Box<dyn Collective>> {
            let bad = || Error::Distributed {
                reason: format!("MPI_Comm_split({color}, {key}) failed"),
            };
            let color = i32::try_from(color).map_err(|_| bad())?;
            let key = i32::try_from(key).map_err(|_| bad())?;
            let group = self
                .world
                .split_by_color_with_key(mpi::topology::Color::with_value(color), key)
                .ok_or_else(bad)?;
            Ok(Box::new(Mpi {
                world: group,
                timeout: self.timeout,
                world_rank: self.world_rank,
                _universe: None,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_is_the_identity() {
        let mut v = [1.5f32, -2.0];
        all_reduce_buckets(&Alone, &mut v).unwrap();
        assert_eq!(v, [1.5, -2.0]);
        assert!(Alone.any(true, "x").unwrap() && !Alone.any(false, "x").unwrap());
        assert!(same_everywhere(&Alone, 7, "x").unwrap());
        assert_ne!(digest(&[1.0, 2.0]), digest(&[2.0, 1.0]));
    }
}
