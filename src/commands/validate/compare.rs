//! Step-by-step comparison of a device's teacher-forced run with the host's logits
//! (docs/validate.md, "Compare"): the worst logit difference, near-ties (the device picked
//! another token where the host's top-two margin is inside the tolerance: reported, then the
//! host's token is fed on both sides) and the first divergence outside the tolerance.

use ava_runtime::runner_report::PromptRun;
use serde::Serialize;

/// How far a device's logit may be from the host's at one step: `abs + rel * scale`, where
/// `scale` is that step's largest host logit in magnitude ([`scale`]). Float rounding moves a
/// logit in proportion to the magnitudes summed into it, so the bound follows the logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Tolerance {
    pub abs: f32,
    pub rel: f32,
}

impl Tolerance {
    /// The tolerance of a step whose host logits have scale `scale`.
    pub fn at(&self, scale: f32) -> f32 {
        self.abs + self.rel * scale
    }
}

/// Default tolerance: float ordering (vector widths, FMA) and the f16 KV cache's rounding move
/// logits by ~1e-4 on the tiny models and up to 1.3e-4 of the step's scale on the real Gemma 3
/// 270M (bf16, 10 prompts; docs/runtime.md): the relative part is four times that.
pub const TOLERANCE: Tolerance = Tolerance {
    abs: 1e-3,
    rel: 5e-4,
};
/// Default tolerance of q4bf16 archives: the same float differences can move an activation
/// across an int8 rounding boundary (one code, `amax / 127`), moving logits by ~1e-1 on the
/// tiny models and up to 5.7e-2 of the step's scale on the real Gemma 3 270M (q4bf16 g128,
/// 10 prompts; docs/runtime.md).
pub const TOLERANCE_INT8_ACTS: Tolerance = Tolerance { abs: 0.1, rel: 0.1 };

/// The default tolerance of an archive quantized as `quantization` (its manifest's field).
pub fn default_tolerance(quantization: &str) -> Tolerance {
    if quantization.starts_with("q4") {
        TOLERANCE_INT8_ACTS
    } else {
        TOLERANCE
    }
}

/// The scale of one step's host logits: the largest finite `|logit|` (0 when none is).
pub fn scale(logits: &[f32]) -> f32 {
    logits
        .iter()
        .map(|v| v.abs())
        .filter(|v| v.is_finite())
        .fold(0.0, f32::max)
}

/// What one step of the device reported: its argmax and its highest logits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceStep {
    pub argmax: u32,
    pub top: Vec<(u32, f32)>,
}

/// Where the device's logits differ most from the host's (absolutely, or relative to the
/// step's scale).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WorstDiff {
    pub value: f32,
    pub prompt: usize,
    pub token: usize,
    pub id: u32,
    /// The host step's [`scale`].
    pub scale: f32,
    /// The tolerance at that step.
    pub tolerance: f32,
}

/// One step's largest logit difference, against the host's scale and the tolerance there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepDiff {
    pub prompt: usize,
    pub token: usize,
    pub diff: f32,
    pub scale: f32,
    pub tolerance: f32,
}

/// A step where the device's greedy token differs from the host's by less than the tolerance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NearTie {
    pub prompt: usize,
    pub token: usize,
    /// The host's token (fed on both sides from here on).
    pub expected: u32,
    /// The device's argmax.
    pub got: u32,
    /// The host's logit of `expected` minus its logit of `got`.
    pub margin: f32,
    /// The tolerance at that step.
    pub tolerance: f32,
}

/// The first step outside the tolerance. `expected`/`got` are the host's and the device's
/// greedy tokens (`None` for a missing step); `margin` the host's margin between them where
/// they differ; `logit_diff` that step's largest logit difference; `tolerance` the tolerance
/// there (`None` where the host has no logits).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    pub prompt: usize,
    pub token: usize,
    pub expected: Option<u32>,
    pub got: Option<u32>,
    pub margin: Option<f32>,
    pub logit_diff: Option<f32>,
    pub tolerance: Option<f32>,
}

/// The running comparison of every prompt's steps.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Comparison {
    pub tolerance: Tolerance,
    /// Every step's greedy token equal on both sides.
    pub tokens_match: bool,
    pub max_logit_diff: Option<WorstDiff>,
    /// The step whose difference is largest relative to the host's scale (`value`: the ratio).
    pub max_relative_logit_diff: Option<WorstDiff>,
    pub near_ties: Vec<NearTie>,
    pub first_divergence: Option<Divergence>,
    /// Steps compared.
    pub steps: usize,
    /// Every compared step's largest difference, in order (`alc validate -v` prints them).
    #[serde(skip)]
    pub per_step: Vec<StepDiff>,
}

impl Comparison {
    /// An empty comparison at `tolerance`.
    pub fn new(tolerance: Tolerance) -> Self {
        Comparison {
            tolerance,
            tokens_match: true,
            ..Comparison::default()
        }
    }

    /// Whether every step was within the tolerance.
    pub fn ok(&self) -> bool {
        self.first_divergence.is_none()
    }

    /// Compares step `token` of prompt `prompt`: the host's full `logits`, the host's token
    /// `expected` (fed next on both sides), and what the device reported (`None`: missing).
    pub fn step(
        &mut self,
        (prompt, token): (usize, usize),
        logits: &[f32],
        expected: u32,
        device: Option<&DeviceStep>,
    ) {
        self.steps += 1;
        let Some(d) = device else {
            self.tokens_match = false;
            self.diverge(Divergence {
                prompt,
                token,
                expected: Some(expected),
                got: None,
                margin: None,
                logit_diff: None,
                tolerance: None,
            });
            return;
        };
        let scale = scale(logits);
        let tolerance = self.tolerance.at(scale);
        let diff = d
            .top
            .iter()
            .map(|&(id, v)| {
                let host = logits.get(id as usize).copied().unwrap_or(f32::NAN);
                (id, (v - host).abs())
            })
            // A NaN (on either side, or an id outside the vocabulary) is the worst difference.
            .map(|(id, x)| (id, if x.is_nan() { f32::INFINITY } else { x }))
            .fold(None, |m: Option<(u32, f32)>, (id, x)| match m {
                Some((_, y)) if y >= x => m,
                _ => Some((id, x)),
            });
        if let Some((id, value)) = diff {
            let worst = |w: &Option<WorstDiff>, v: f32| w.as_ref().is_none_or(|w| v > w.value);
            let at = |value| WorstDiff {
                value,
                prompt,
                token,
                id,
                scale,
                tolerance,
            };
            if worst(&self.max_logit_diff, value) {
                self.max_logit_diff = Some(at(value));
            }
            let relative = if scale > 0.0 { value / scale } else { value };
            if worst(&self.max_relative_logit_diff, relative) {
                self.max_relative_logit_diff = Some(at(relative));
            }
            self.per_step.push(StepDiff {
                prompt,
                token,
                diff: value,
                scale,
                tolerance,
            });
        }
        let logit_diff = diff.map(|(_, x)| x);
        let too_far = logit_diff.is_some_and(|x| x > tolerance);
        let margin = (d.argmax != expected).then(|| margin(logits, expected, d.argmax));
        if margin.is_some() {
            self.tokens_match = false;
        }
        let tie_outside = margin.is_some_and(|m| m.is_nan() || m > tolerance);
        if too_far || tie_outside {
            self.diverge(Divergence {
                prompt,
                token,
                expected: Some(expected),
                got: Some(d.argmax),
                margin,
                logit_diff,
                tolerance: Some(tolerance),
            });
        } else if let Some(margin) = margin {
            self.near_ties.push(NearTie {
                prompt,
                token,
                expected,
                got: d.argmax,
                margin,
                tolerance,
            });
        }
    }

    /// A prompt or step the host has no reference for (the device reported more).
    pub fn extra(&mut self, prompt: usize, token: usize, got: u32) {
        self.tokens_match = false;
        self.diverge(Divergence {
            prompt,
            token,
            expected: None,
            got: Some(got),
            margin: None,
            logit_diff: None,
            tolerance: None,
        });
    }

    fn diverge(&mut self, d: Divergence) {
        if self.first_divergence.is_none() {
            self.first_divergence = Some(d);
        }
    }

    /// The `tokens` check's detail line.
    pub fn detail(&self) -> String {
        let worst = self
            .max_logit_diff
            .as_ref()
            .map_or("no logits".to_string(), |w| {
                format!("max logit diff {:.2e}", w.value)
            });
        let ties = match self.near_ties.len() {
            0 => String::new(),
            n => format!(", {n} near-tie(s) (tokens differ inside the tolerance)"),
        };
        match &self.first_divergence {
            None => format!(
                "{} steps within {} of the host: {worst}{ties}",
                self.steps,
                self.tolerance_text()
            ),
            Some(d) => format!(
                "prompt {} token {}: expected {:?}, got {:?}{}{} (tolerance {}; {worst}{ties})",
                d.prompt,
                d.token,
                d.expected,
                d.got,
                d.margin
                    .map_or(String::new(), |m| format!(", host margin {m:.3e}")),
                d.logit_diff
                    .map_or(String::new(), |x| format!(", logit diff {x:.3e}")),
                d.tolerance.map_or(self.tolerance_text(), |t| format!(
                    "{t:.3e} = {}",
                    self.tolerance_text()
                )),
            ),
        }
    }

    /// `0.01`, or `0.01 + 0.002 * scale` with a relative part.
    fn tolerance_text(&self) -> String {
        let Tolerance { abs, rel } = self.tolerance;
        if rel == 0.0 {
            format!("{abs}")
        } else {
            format!("{abs} + {rel} * scale")
        }
    }
}

/// `logits[a] - logits[b]` (NaN, an id outside the vocabulary: infinite).
fn margin(logits: &[f32], a: u32, b: u32) -> f32 {
    match (logits.get(a as usize), logits.get(b as usize)) {
        (Some(x), Some(y)) if !(x - y).is_nan() => x - y,
        _ => f32::INFINITY,
    }
}

/// The steps of one prompt of the runner's report (`tokens` and `top`).
pub fn device_steps(prompt: &PromptRun) -> Vec<DeviceStep> {
    let tops = prompt.top.as_deref().unwrap_or_default();
    prompt
        .tokens
        .iter()
        .enumerate()
        .map(|(s, &argmax)| DeviceStep {
            argmax,
            top: tops.get(s).cloned().unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Tolerance = Tolerance {
        abs: 0.05,
        rel: 0.0,
    };

    fn step(argmax: u32, top: &[(u32, f32)]) -> DeviceStep {
        DeviceStep {
            argmax,
            top: top.to_vec(),
        }
    }

    #[test]
    fn equal_logits_pass_with_zero_difference() {
        let mut c = Comparison::new(T);
        let host = [0.0, 3.0, 1.0];
        c.step((0, 0), &host, 1, Some(&step(1, &[(1, 3.0), (2, 1.0)])));
        assert!(c.ok() && c.tokens_match && c.near_ties.is_empty());
        assert_eq!(c.max_logit_diff.unwrap().value, 0.0);
    }

    #[test]
    fn a_constructed_tie_is_a_near_tie_and_the_run_goes_on() {
        let mut c = Comparison::new(T);
        // Host: token 1 by 0.01 over token 2; the device: 2 by 0.005 over 1.
        let host = [0.0, 2.01, 2.0];
        c.step((0, 3), &host, 1, Some(&step(2, &[(2, 2.01), (1, 2.005)])));
        c.step((0, 4), &host, 1, Some(&step(1, &[(1, 2.01), (2, 2.0)])));
        assert!(c.ok(), "{c:?}");
        assert!(!c.tokens_match);
        assert_eq!(c.near_ties.len(), 1);
        let t = &c.near_ties[0];
        assert_eq!((t.prompt, t.token, t.expected, t.got), (0, 3, 1, 2));
        assert!((t.margin - 0.01).abs() < 1e-6);
        let w = c.max_logit_diff.unwrap();
        assert!((w.value - 0.01).abs() < 1e-6 && w.token == 3 && w.id == 2);
    }

    #[test]
    fn a_token_change_outside_the_tolerance_fails() {
        let mut c = Comparison::new(T);
        let host = [0.0, 3.0, 2.0];
        c.step((1, 2), &host, 1, Some(&step(2, &[(2, 3.0), (1, 2.99)])));
        let d = c.first_divergence.clone().unwrap();
        assert_eq!(
            (d.prompt, d.token, d.expected, d.got),
            (1, 2, Some(1), Some(2))
        );
        assert_eq!(d.margin, Some(1.0));
        assert!(c.near_ties.is_empty());
        assert!(c.detail().contains("host margin"));
    }

    #[test]
    fn a_logit_difference_outside_the_tolerance_fails_with_equal_tokens() {
        let mut c = Comparison::new(T);
        let host = [0.0, 3.0, 2.0];
        c.step((0, 0), &host, 1, Some(&step(1, &[(1, 3.0), (2, 2.2)])));
        assert!(c.tokens_match);
        let d = c.first_divergence.clone().unwrap();
        assert!((d.logit_diff.unwrap() - 0.2).abs() < 1e-6);
        // A NaN on the device is the worst difference, not a pass.
        let mut c = Comparison::new(T);
        c.step((0, 0), &host, 1, Some(&step(1, &[(1, f32::NAN)])));
        assert!(!c.ok());
    }

    #[test]
    fn the_tolerance_grows_with_the_host_scale() {
        let t = Tolerance { abs: 0.1, rel: 0.1 };
        assert_eq!(scale(&[1.0, -20.0, f32::NEG_INFINITY, 3.0]), 20.0);
        // A difference of 1.5 at scale 20 (tolerance 2.1) passes; at scale 5 (0.6) it fails.
        let mut c = Comparison::new(t);
        c.step((0, 0), &[0.0, 20.0, 2.0], 1, Some(&step(1, &[(1, 21.5)])));
        assert!(c.ok(), "{c:?}");
        let w = c.max_logit_diff.clone().unwrap();
        assert_eq!((w.value, w.scale, w.tolerance), (1.5, 20.0, 2.1));
        let r = c.max_relative_logit_diff.clone().unwrap();
        assert!((r.value - 0.075).abs() < 1e-6);
        c.step((0, 1), &[0.0, 5.0, 2.0], 1, Some(&step(1, &[(1, 6.5)])));
        let d = c.first_divergence.clone().unwrap();
        assert_eq!((d.token, d.tolerance), (1, Some(0.6)));
        assert!(c.detail().contains("0.1 + 0.1 * scale"), "{}", c.detail());
        assert_eq!(c.per_step.len(), 2);
    }

    #[test]
    fn missing_steps_fail() {
        let mut c = Comparison::new(T);
        c.step((0, 5), &[1.0], 0, None);
        let d = c.first_divergence.clone().unwrap();
        assert_eq!((d.token, d.expected, d.got), (5, Some(0), None));
        let mut c = Comparison::new(T);
        c.extra(2, 0, 7);
        assert!(!c.ok());
    }

    #[test]
    fn runner_steps_parse() {
        let v = serde_json::json!({"prompt_tokens": 1, "tokens": [3, 4],
            "top": [[[3, 1.5], [4, null]], [[4, 2.0]]], "stop_reason": "max_tokens",
            "ttft_ms": 1.0, "prefill_tok_s": null, "decode_tok_s": 2.0});
        let s = device_steps(&serde_json::from_value(v).unwrap());
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].argmax, 3);
        assert!(s[0].top[1].1.is_nan());
        assert_eq!(s[1].top, vec![(4, 2.0)]);
    }
}
