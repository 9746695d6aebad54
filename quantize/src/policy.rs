//! Which tensor gets which format: a per-role policy (`embed=q8bf16,proj=q4bf16,norm=f32`).
//!
//! Roles: the (tied) embedding / lm_head, the seven projections of each layer, norms (never
//! quantized: only float schemes are accepted for them), and anything else (kept as float).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use ava_core::quant::QuantFormat;
use ava_core::DType;

use crate::error::{Error, Result};

/// How one tensor is stored.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// float32.
    F32,
    /// float16.
    F16,
    /// bfloat16.
    Bf16,
    /// 8-bit codes, bf16 group scales.
    Q8Bf16,
    /// 4-bit codes, bf16 group scales.
    Q4Bf16,
}

impl Scheme {
    /// Every scheme, by name.
    pub const ALL: [Scheme; 5] = [
        Scheme::F32,
        Scheme::F16,
        Scheme::Bf16,
        Scheme::Q8Bf16,
        Scheme::Q4Bf16,
    ];

    /// `f32`, `f16`, `bf16`, `q8bf16`, `q4bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::F32 => "f32",
            Scheme::F16 => "f16",
            Scheme::Bf16 => "bf16",
            Scheme::Q8Bf16 => "q8bf16",
            Scheme::Q4Bf16 => "q4bf16",
        }
    }

    /// The grouped integer format, for the quantized schemes.
    pub fn quant_format(self) -> Option<QuantFormat> {
        match self {
            Scheme::Q8Bf16 => Some(QuantFormat::Q8Bf16),
            Scheme::Q4Bf16 => Some(QuantFormat::Q4Bf16),
            _ => None,
        }
    }

    /// The float dtype, for the float schemes.
    pub fn float_dtype(self) -> Option<DType> {
        match self {
            Scheme::F32 => Some(DType::F32),
            Scheme::F16 => Some(DType::F16),
            Scheme::Bf16 => Some(DType::BF16),
            _ => None,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Scheme::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                Error::Quantize(format!(
                    "unknown scheme {s:?} (f32, f16, bf16, q8bf16, q4bf16)"
                ))
            })
    }
}

/// What a tensor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `embed_tokens` (and the tied head) or an untied `lm_head`.
    Embed,
    /// A `*_proj.weight` of a decoder layer.
    Proj,
    /// A norm weight.
    Norm,
    /// Anything else.
    Other,
}

impl Role {
    /// The role of a Gemma 3 tensor name.
    pub fn of(name: &str) -> Role {
        if name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight") {
            Role::Embed
        } else if name.ends_with("_proj.weight") {
            Role::Proj
        } else if name.contains("norm") {
            Role::Norm
        } else {
            Role::Other
        }
    }
}

/// The scheme per role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The embedding / lm_head.
    pub embed: Scheme,
    /// Projections.
    pub proj: Scheme,
    /// Norms (float only).
    pub norm: Scheme,
    /// Everything else (float only).
    pub other: Scheme,
}

impl Policy {
    /// The default for `--quant q`: projections in `q`; for q4bf16 the embedding in q8bf16
    /// (it is also the output head, the most sensitive matrix: see docs/quantization.md);
    /// norms f32; the rest as the projections when float, else bf16.
    pub fn for_quant(q: Scheme) -> Policy {
        let float = if q.float_dtype().is_some() {
            q
        } else {
            Scheme::Bf16
        };
        Policy {
            embed: if q == Scheme::Q4Bf16 {
                Scheme::Q8Bf16
            } else {
                q
            },
            proj: q,
            norm: Scheme::F32,
            other: float,
        }
    }

    /// Applies `role=scheme,...` overrides (`embed`, `proj`, `norm`, `other`); a tensor name
    /// is an error here (see [`Policy::with_tensor_overrides`]).
    pub fn with_overrides(self, spec: &str) -> Result<Policy> {
        let (policy, tensors) = self.with_tensor_overrides(spec)?;
        match tensors.keys().next() {
            Some(name) => Err(Error::Quantize(format!(
                "policy: unknown role {name:?} (embed, proj, norm, other)"
            ))),
            None => Ok(policy),
        }
    }

    /// Applies `role=scheme,...` overrides and returns, apart, those naming one tensor
    /// (a key with a `.`, e.g. `model.layers.3.mlp.down_proj.weight=q8bf16`). A tensor whose
    /// role is `norm` or `other` only takes a float scheme.
    pub fn with_tensor_overrides(
        mut self,
        spec: &str,
    ) -> Result<(Policy, BTreeMap<String, Scheme>)> {
        let mut tensors = BTreeMap::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (role, scheme) = part
                .split_once('=')
                .ok_or_else(|| Error::Quantize(format!("policy {part:?}: expected role=scheme")))?;
            let scheme: Scheme = scheme.trim().parse()?;
            let role = role.trim();
            if role.contains('.') {
                if matches!(Role::of(role), Role::Norm | Role::Other)
                    && scheme.float_dtype().is_none()
                {
                    return Err(Error::Quantize(format!(
                        "policy {part:?}: {role} is never quantized (use f32, f16 or bf16)"
                    )));
                }
                tensors.insert(role.to_string(), scheme);
                continue;
            }
            match role {
                "embed" => self.embed = scheme,
                "proj" => self.proj = scheme,
                "norm" | "other" if scheme.float_dtype().is_none() => {
                    return Err(Error::Quantize(format!(
                        "policy {part:?}: {role} tensors are never quantized (use f32, f16 or bf16)"
                    )))
                }
                "norm" => self.norm = scheme,
                "other" => self.other = scheme,
                r => {
                    return Err(Error::Quantize(format!(
                        "policy {part:?}: unknown role {r:?} (embed, proj, norm, other)"
                    )))
                }
            }
        }
        Ok((self, tensors))
    }

    /// The scheme of tensor `name`.
    pub fn scheme_of(&self, name: &str) -> Scheme {
        match Role::of(name) {
            Role::Embed => self.embed,
            Role::Proj => self.proj,
            Role::Norm => self.norm,
            Role::Other => self.other,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "embed={},proj={},norm={},other={}",
            self.embed, self.proj, self.norm, self.other
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_overrides() {
        assert_eq!(Role::of("model.embed_tokens.weight"), Role::Embed);
        assert_eq!(Role::of("model.layers.3.mlp.down_proj.weight"), Role::Proj);
        assert_eq!(
            Role::of("model.layers.3.self_attn.q_norm.weight"),
            Role::Norm
        );
        let p = Policy::for_quant(Scheme::Q4Bf16);
        assert_eq!(
            p.to_string(),
            "embed=q8bf16,proj=q4bf16,norm=f32,other=bf16"
        );
        let p = p.with_overrides("embed=q4bf16").map(|p| p.embed);
        assert_eq!(p.ok(), Some(Scheme::Q4Bf16));
        assert!(Policy::for_quant(Scheme::F32)
            .with_overrides("norm=q4bf16")
            .is_err());
        assert!(Policy::for_quant(Scheme::F32)
            .with_overrides("bogus")
            .is_err());
        let down = "model.layers.1.mlp.down_proj.weight";
        let (p, tensors) = Policy::for_quant(Scheme::Q4Bf16)
            .with_tensor_overrides(&format!("proj=q8bf16, {down}=q4bf16"))
            .unwrap();
        assert_eq!(p.proj, Scheme::Q8Bf16);
        assert_eq!(tensors.get(down), Some(&Scheme::Q4Bf16));
        assert!(Policy::for_quant(Scheme::Q4Bf16)
            .with_overrides(&format!("{down}=q8bf16"))
            .is_err());
        assert!(Policy::for_quant(Scheme::Q4Bf16)
            .with_tensor_overrides("model.norm.weight=q4bf16")
            .is_err());
    }
}
