//! The distributed optimizer (ZeRO-1) over ranks that are threads of this process: sharded
//! runs of 2 and 3 ranks against one replicated rank, their checkpoints resumed on other world
//! sizes, sharded or not.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use lmforge_model::Gpt;
use lmforge_train::checkpoint::{self, read_optimizer, read_state};
use lmforge_train::zero::{Layout, trainable_shapes};
use lmforge_train::{
    Alone, Collective, Precision, PretrainConfig, PretrainReport, Resume, Splits, pretrain,
};

use crate::threads::Threads;
use crate::train::{corpus, device, objective, pretrain_config, small_config, splits, temp_dir};

/// Six iterations of 6 samples in micro-batches of 1, a checkpoint every 3.
fn config(save: &Path, sharded: bool) -> PretrainConfig {
    PretrainConfig {
        micro_batch: 1,
        global_batch: 6,
        save_interval: 3,
        eval_interval: 0,
        distributed_optimizer: sharded,
        ..pretrain_config(save, 6)
    }
}

/// Trains on `world` ranks (threads; `Alone` for 1), from `load` when given; rank 0's report.
fn train(
    data: &Splits,
    config: &PretrainConfig,
    world: usize,
    load: Option<&Path>,
) -> PretrainReport {
    let one = |collective: &dyn Collective| {
        let device = device();
        let (model, resume): (Gpt, _) = match load {
            Some(dir) => {
                let model = lmforge_model::load_gpt(dir, &device).unwrap();
                let state = read_state(dir).unwrap();
                // A tensor-parallel run reads the whole optimizer and cuts its share itself.
                let target = (config.distributed_optimizer && config.tensor_parallel <= 1)
                    .then_some((collective.world(), collective.rank()));
                let optimizer =
                    read_optimizer(dir, &state, &device, &trainable_shapes(&model), target)
                        .unwrap();
                (model, Some(Resume { optimizer, state }))
            }
            None => (small_config().init(&device, 1234).unwrap(), None),
        };
        let stop = AtomicBool::new(false);
        pretrain(
            model,
            &objective(),
            data,
            config,
            &[device],
            collective,
            resume,
            &stop,
            serde_json::Value::Null,
        )
        .unwrap()
        .1
    };
    // Each rank holds its own share of the moments (and of the f32 master weights when the
    // model is held in half), and the shares add up to all of them.
    let half = config.precision != Precision::Fp32;
    let check = |r: usize, report: &PretrainReport| {
        if config.tensor_parallel > 1 {
            return;
        }
        let layout = Layout::new(
            &trainable_shapes(&small_config().init(&device(), 0).unwrap()),
            world,
        );
        let m = &report.memory;
        if config.distributed_optimizer {
            let per_value = if half { 12 } else { 8 };
            assert_eq!(
                m.optimizer_bytes as usize,
                per_value * layout.range(r).len()
            );
            assert_eq!(m.optimizer_sharded_over, world);
            let weight = if half { 2 } else { 4 };
            assert_eq!(m.weights_bytes as usize, weight * layout.total);
        } else {
            assert_eq!(m.optimizer_bytes as usize, 8 * layout.total);
            assert_eq!(m.optimizer_sharded_over, 1);
        }
        assert_eq!(m.gradient_bytes as usize, 4 * layout.total);
    };
    if world == 1 {
        let report = one(&Alone);
        check(0, &report);
        return report;
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = Threads::world(world)
            .into_iter()
            .map(|rank| scope.spawn(move || one(&rank)))
            .collect();
        let reports: Vec<PretrainReport> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for (r, report) in reports.iter().enumerate() {
            check(r, report);
        }
        reports.into_iter().next().unwrap()
    })
}

fn losses(save: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(save.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|l| Some((l["iteration"].as_u64()?, l["loss"].as_f64()?)))
        .collect()
}

fn close(reference: &[(u64, f64)], got: &[(u64, f64)], what: &str) {
    within(reference, got, 1e-5, what);
}

fn within(reference: &[(u64, f64)], got: &[(u64, f64)], tolerance: f64, what: &str) {
    let tail = &reference[reference.len() - got.len()..];
    for ((i, x), (j, y)) in tail.iter().zip(got) {
        assert_eq!(i, j, "{what}");
        assert!(
            (x - y).abs() <= tolerance * x.abs(),
            "{what}: iteration {i}: {x} vs {y}"
        );
    }
}

fn weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("optimizer"))
        .collect();
    names.sort();
    names
}

#[test]
fn sharded_ranks_equal_one_replicated_rank_and_resume_on_any_world_size() {
    let dir = temp_dir("zero");
    let prefix = corpus(&dir, 120);
    let data = splits(&prefix, 16, 36, 4);
    let save = |name: &str| -> PathBuf { dir.join(name) };

    let reference = save("one");
    train(&data, &config(&reference, false), 1, None);
    let expected = losses(&reference);
    assert_eq!(expected.len(), 6);

    for world in [2, 3] {
        let run = save(&format!("sharded-{world}"));
        let report = train(&data, &config(&run, true), world, None);
        close(
            &expected,
            &losses(&run),
            &format!("{world} sharded ranks vs one"),
        );
        let at = checkpoint::iteration_dir(&run, 6);
        let shards: Vec<String> = (0..world)
            .map(|r| checkpoint::shard_file(r, world))
            .collect();
        assert_eq!(
            files(&at),
            shards,
            "one optimizer file per rank, no whole one"
        );
        assert_eq!(report.world_size, world);
    }
    // The same world size twice: the same bytes.
    let again = save("sharded-2-again");
    train(&data, &config(&again, true), 2, None);
    assert!(
        weights(&checkpoint::iteration_dir(&again, 6))
            == weights(&checkpoint::iteration_dir(&save("sharded-2"), 6)),
        "two sharded 2-rank runs differ"
    );

    // Iteration 3 of 3 sharded ranks, resumed sharded on 2 and whole on 1; iteration 3 of the
    // whole optimizer resumed sharded on 3.
    let cases = [
        ("sharded-3", 2, true),
        ("sharded-3", 1, false),
        ("one", 3, true),
        ("sharded-2", 3, false),
    ];
    for (from, world, sharded) in cases {
        let load = checkpoint::iteration_dir(&save(from), 3);
        let run = save(&format!("from-{from}-on-{world}-{sharded}"));
        let report = train(&data, &config(&run, sharded), world, Some(&load));
        assert_eq!(report.start_iteration, 3);
        let what = format!("{from} resumed on {world} ranks (sharded: {sharded})");
        close(&expected, &losses(&run), &what);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_or_foreign_shards_are_refused_naming_the_file() {
    let dir = temp_dir("zero-damaged");
    let prefix = corpus(&dir, 120);
    let data = splits(&prefix, 16, 36, 4);
    let run = dir.join("run");
    train(&data, &config(&run, true), 2, None);
    let at = checkpoint::iteration_dir(&run, 3);
    let state = read_state(&at).unwrap();
    let device = device();
    let shapes = trainable_shapes(&small_config().init(&device, 0).unwrap());
    // A shard of another layout (rank 1's file in rank 0's place).
    let (zero, one) = (
        at.join(checkpoint::shard_file(0, 2)),
        at.join(checkpoint::shard_file(1, 2)),
    );
    let saved = std::fs::read(&zero).unwrap();
    std::fs::copy(&one, &zero).unwrap();
    let error = read_optimizer(&at, &state, &device, &shapes, None).unwrap_err();
    assert!(
        error.to_string().contains(&checkpoint::shard_file(0, 2)),
        "{error}"
    );
    std::fs::write(&zero, saved).unwrap();
    std::fs::remove_file(&one).unwrap();
    let error = read_optimizer(&at, &state, &device, &shapes, Some((3, 0))).unwrap_err();
    assert!(
        error.to_string().contains(&checkpoint::shard_file(1, 2))
            && error.to_string().contains("missing"),
        "{error}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn in_half_precision_the_master_weights_are_sharded_too() {
    let dir = temp_dir("zero-bf16");
    let prefix = corpus(&dir, 120);
    let data = splits(&prefix, 16, 36, 4);
    let bf16 = |save: &Path, sharded: bool| PretrainConfig {
        precision: Precision::Bf16,
        ..config(save, sharded)
    };
    let reference = dir.join("replicated");
    train(&data, &bf16(&reference, false), 1, None);
    let expected = losses(&reference);
    // One rank holding its model in bf16 and its master in f32 computes what a replicated run
    // computes on the cast of its f32 weights: the same bytes.
    let alone = dir.join("alone");
    train(&data, &bf16(&alone, true), 1, None);
    assert_eq!(
        expected,
        losses(&alone),
        "one sharded rank vs replicated, bf16"
    );
    assert!(
        weights(&checkpoint::iteration_dir(&alone, 6))
            == weights(&checkpoint::iteration_dir(&reference, 6)),
        "the checkpoint holds the f32 master weights"
    );
    // Three ranks: the master weights differ by the gradients' summation order, their bf16
    // casts rarely; the checkpoint resumes replicated.
    let three = dir.join("three");
    train(&data, &bf16(&three, true), 3, None);
    within(
        &expected,
        &losses(&three),
        1e-3,
        "3 sharded ranks vs one, bf16",
    );
    let resumed = dir.join("resumed");
    let load = checkpoint::iteration_dir(&three, 3);
    train(&data, &bf16(&resumed, false), 1, Some(&load));
    within(
        &expected,
        &losses(&resumed),
        1e-3,
        "resumed replicated, bf16",
    );
    let model = lmforge_model::load_gpt(&checkpoint::iteration_dir(&three, 6), &device()).unwrap();
    let full = lmforge_train::zero::weight_bytes(&model);
    assert_eq!(
        full as usize,
        4 * model.config().num_params(),
        "model.safetensors is f32"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tensor_parallel_shares_shard_their_optimizer_over_the_data_parallel_ranks() {
    let dir = temp_dir("zero-tp");
    let prefix = corpus(&dir, 120);
    let data = splits(&prefix, 16, 36, 4);
    let reference = dir.join("one");
    train(&data, &config(&reference, false), 1, None);
    let expected = losses(&reference);
    // TP 2 × DP 2, the moments of each share sharded over its two data-parallel ranks.
    let run = dir.join("tp2-dp2");
    let tp = |save: &Path| PretrainConfig {
        tensor_parallel: 2,
        ..config(save, true)
    };
    let report = train(&data, &tp(&run), 4, None);
    assert_eq!(report.tensor_model_parallel_size, 2);
    assert_eq!(report.memory.optimizer_sharded_over, 2);
    close(&expected, &losses(&run), "TP 2 × DP 2 sharded vs one");
    // Its checkpoint is whole: one process resumes it, and so does TP 2 × DP 2 again.
    let at = checkpoint::iteration_dir(&run, 3);
    assert_eq!(files(&at), vec!["optimizer.safetensors".to_string()]);
    let whole = dir.join("resumed-whole");
    train(&data, &config(&whole, false), 1, Some(&at));
    close(
        &expected,
        &losses(&whole),
        "TP 2 × DP 2's checkpoint resumed on one",
    );
    let again = dir.join("resumed-tp");
    train(&data, &tp(&again), 4, Some(&at));
    close(
        &expected,
        &losses(&again),
        "TP 2 × DP 2's checkpoint resumed on TP 2 × DP 2",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
