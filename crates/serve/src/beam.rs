//! Megatron's `beam_width`: beam search runs on the burn model (the scheduler's engine samples
//! one token per sequence), loaded on first use and run off the async threads, one at a time.

use std::sync::Arc;

use axum::http::StatusCode;
use lmforge_model::generate::beam_search;

use crate::AppState;
use crate::fields::ApiError;

/// The best `width` continuations of `prompt`: tokens and score, best first.
pub async fn search(
    state: &Arc<AppState>,
    prompt: Vec<u32>,
    width: usize,
    tokens: usize,
    stop_token: Option<u32>,
    length_penalty: f32,
) -> Result<Vec<(Vec<u32>, f32)>, ApiError> {
    if prompt.len() + tokens > state.engine.limit {
        return Err(ApiError::field(
            "tokens_to_generate",
            format!(
                "the prompt ({} tokens) plus tokens_to_generate ({tokens}) is over {}",
                prompt.len(),
                state.engine.limit
            ),
        ));
    }
    let state = state.clone();
    let run = tokio::task::spawn_blocking(move || {
        let device = burn::tensor::Device::flex();
        let mut model = state.beam_model.lock().unwrap_or_else(|e| e.into_inner());
        if model.is_none() {
            *model = Some(
                lmforge_quant::load_gpt(&state.checkpoint, &device).map_err(|e| e.to_string())?,
            );
        }
        let model = model.as_ref().expect("loaded above");
        let stops: Vec<u32> = stop_token.into_iter().collect();
        beam_search(
            model,
            &prompt,
            width,
            tokens,
            &stops,
            length_penalty,
            &device,
        )
        .map(|beams| beams.into_iter().map(|b| (b.tokens, b.score)).collect())
        .map_err(|e| e.to_string())
    });
    match run.await {
        Ok(Ok(beams)) => Ok(beams),
        Ok(Err(message)) => Err(ApiError::new(StatusCode::BAD_REQUEST, message)),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}
