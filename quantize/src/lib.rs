//! Weight quantization formats (Q4BF16, Q8BF16) and calibration.
//!
//! Reserved: the block formats, reference dequantizers and calibration arrive with issue 5.
