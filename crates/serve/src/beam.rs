//! Megatron's `beam_width`: beam search over the scheduler's own engine (its rows forked in a
//! paged cache of its own, blocks shared between beams), run off the async threads.

use std::sync::Arc;

use axum::http::StatusCode;

use crate::AppState;
use crate::fields::ApiError;

/// The best `width` continuations of `prompt`: tokens and score, best first.
pub async fn search(
    state: &Arc<AppState>,
    prompt: Vec<u32>,
    width: usize,
    tokens: usize,
    stops: Vec<u32>,
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
        state
            .model
            .beam_search(&prompt, width, tokens, &stops, length_penalty)
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
