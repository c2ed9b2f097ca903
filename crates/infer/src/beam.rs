//! Beam search over any [`Decoder`]: the cache's rows are forked to follow the best
//! continuations (shared blocks on a paged engine, copied rows on burn's dense cache).

use serde::Serialize;

use crate::decoder::Decoder;
use crate::sampling::log_sum_exp;
use crate::{Error, Result};

/// One finished hypothesis of [`beam_search`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Beam {
    /// The new tokens.
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities.
    pub logprob: f32,
    /// `logprob / len^length_penalty`, what beams are ranked by.
    pub score: f32,
}

/// Beam search of width `width` from one prompt: every step keeps the `width` best
/// continuations by summed log-probability; a beam that produces a stop token is finished.
/// Returns up to `width` beams, best first, ranked by `logprob / len^length_penalty`
/// (Hugging Face's `length_penalty`; 1 is the mean log-probability per token).
pub fn beam_search<D: Decoder>(
    model: &D,
    prompt: &[u32],
    width: usize,
    max_new_tokens: usize,
    stop_tokens: &[u32],
    length_penalty: f32,
) -> Result<Vec<Beam>> {
    if width == 0 {
        return Err(Error::config("beam_width", "must be at least 1"));
    }
    let score = |logprob: f32, len: usize| logprob / (len.max(1) as f32).powf(length_penalty);
    let room = model.max_seq_len().saturating_sub(prompt.len());
    let steps = max_new_tokens.min(room);
    let (mut cache, mut rows) = model.prefill(&[prompt.to_vec()])?;
    let mut beams = vec![Beam {
        tokens: Vec::new(),
        logprob: 0.0,
        score: 0.0,
    }];
    let mut finished: Vec<Beam> = Vec::new();
    for step in 0..steps {
        let mut candidates: Vec<(usize, u32, f32)> = Vec::new();
        for (b, row) in rows.iter().enumerate() {
            let log_sum = log_sum_exp(row);
            let logprobs: Vec<f32> = row.iter().map(|&l| l - log_sum).collect();
            let mut order: Vec<usize> = (0..logprobs.len()).collect();
            order.sort_by(|&x, &y| logprobs[y].total_cmp(&logprobs[x]));
            for &t in order.iter().take(2 * width) {
                candidates.push((b, t as u32, beams[b].logprob + logprobs[t]));
            }
        }
        candidates.sort_by(|a, b| b.2.total_cmp(&a.2));
        let mut next_beams = Vec::with_capacity(width);
        let mut parents = Vec::with_capacity(width);
        let mut tokens = Vec::with_capacity(width);
        for (parent, token, logprob) in candidates {
            let mut beam_tokens = beams[parent].tokens.clone();
            beam_tokens.push(token);
            let beam = Beam {
                score: score(logprob, beam_tokens.len()),
                tokens: beam_tokens,
                logprob,
            };
            if stop_tokens.contains(&token) {
                if finished.len() < width {
                    finished.push(beam);
                }
            } else {
                next_beams.push(beam);
                parents.push(parent);
                tokens.push(token);
            }
            if next_beams.len() == width {
                break;
            }
        }
        if finished.len() >= width || next_beams.is_empty() || step + 1 == steps {
            beams = next_beams;
            break;
        }
        // A parent with several children is forked; one with none is dropped.
        cache = model.select(cache, &parents)?;
        beams = next_beams;
        rows = model.decode(&mut cache, &tokens)?;
    }
    finished.extend(beams.into_iter().filter(|b| !b.tokens.is_empty()));
    finished.sort_by(|a, b| b.score.total_cmp(&a.score));
    finished.truncate(width);
    Ok(finished)
}
