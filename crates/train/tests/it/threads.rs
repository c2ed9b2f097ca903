//! A [`Collective`] over the threads of one process, so that multi-rank training (the sharded
//! optimizer above all) is tested without MPI: every operation writes this rank's part into a
//! shared slot, waits for all, and reads the slots in rank order.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex};

use lmforge_train::{Collective, Result};

struct Shared {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f64>>>,
    /// Groups split off, by (the how-manieth split, color).
    groups: Mutex<BTreeMap<(u64, usize), Arc<Shared>>>,
}

impl Shared {
    fn new(world: usize) -> Arc<Shared> {
        Arc::new(Shared {
            barrier: Barrier::new(world),
            slots: Mutex::new(vec![Vec::new(); world]),
            groups: Mutex::new(BTreeMap::new()),
        })
    }
}

/// One rank of a world of threads.
pub struct Threads {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
    splits: Cell<u64>,
}

impl Threads {
    /// The ranks of a world of `world` threads, one for each thread to take.
    pub fn world(world: usize) -> Vec<Threads> {
        let shared = Shared::new(world);
        (0..world)
            .map(|rank| Threads {
                rank,
                world,
                shared: shared.clone(),
                splits: Cell::new(0),
            })
            .collect()
    }

    /// Publishes `mine`, waits for every rank's, and hands them all (in rank order) to `read`.
    fn exchange<T>(&self, mine: Vec<f64>, read: impl FnOnce(&[Vec<f64>]) -> T) -> T {
        self.shared.slots.lock().unwrap()[self.rank] = mine;
        self.shared.barrier.wait();
        let out = read(&self.shared.slots.lock().unwrap());
        // No rank overwrites its slot before every rank has read them all.
        self.shared.barrier.wait();
        out
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_f32(&self, values: &mut [f32], _what: &str) -> Result<()> {
        let mine = values.iter().map(|&v| f64::from(v)).collect();
        self.exchange(mine, |all| {
            for (i, v) in values.iter_mut().enumerate() {
                *v = all.iter().fold(0.0f32, |sum, slot| sum + slot[i] as f32);
            }
        });
        Ok(())
    }

    fn all_reduce_f64(&self, values: &mut [f64], _what: &str) -> Result<()> {
        self.exchange(values.to_vec(), |all| {
            for (i, v) in values.iter_mut().enumerate() {
                *v = all.iter().map(|slot| slot[i]).sum();
            }
        });
        Ok(())
    }

    fn reduce_scatter_f32(&self, send: &[f32], recv: &mut [f32], _what: &str) -> Result<()> {
        let n = recv.len();
        let mine = send.iter().map(|&v| f64::from(v)).collect();
        self.exchange(mine, |all| {
            for (i, v) in recv.iter_mut().enumerate() {
                *v = all
                    .iter()
                    .fold(0.0f32, |sum, slot| sum + slot[self.rank * n + i] as f32);
            }
        });
        Ok(())
    }

    fn all_gather_f32(&self, send: &[f32], recv: &mut [f32], _what: &str) -> Result<()> {
        let mine = send.iter().map(|&v| f64::from(v)).collect();
        self.exchange(mine, |all| {
            for (out, v) in recv.iter_mut().zip(all.iter().flatten()) {
                *out = *v as f32;
            }
        });
        Ok(())
    }

    fn barrier(&self, _what: &str) -> Result<()> {
        self.exchange(Vec::new(), |_| ());
        Ok(())
    }

    fn split(&self, color: usize, key: usize) -> Result<Box<dyn Collective>> {
        let all = self.exchange(vec![color as f64, key as f64], <[Vec<f64>]>::to_vec);
        let mut members: Vec<(usize, usize)> = all
            .iter()
            .enumerate()
            .filter(|(_, ck)| ck[0] as usize == color)
            .map(|(r, ck)| (ck[1] as usize, r))
            .collect();
        members.sort();
        let rank = members.iter().position(|&(_, r)| r == self.rank).unwrap();
        let seq = self.splits.get();
        self.splits.set(seq + 1);
        let shared = self
            .shared
            .groups
            .lock()
            .unwrap()
            .entry((seq, color))
            .or_insert_with(|| Shared::new(members.len()))
            .clone();
        Ok(Box::new(Threads {
            rank,
            world: members.len(),
            shared,
            splits: Cell::new(0),
        }))
    }
}
