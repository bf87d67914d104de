//! The two ways kernels call the `gemm` crate: row-major operands, and any strides.

/// `dst = lhs * rhs` for row-major operands (`m x k` times `k x n`) whose rows lie
/// `*_rs` floats apart: the usual way the kernels call the `gemm` crate.
///
/// # Safety
/// Each pointer must be valid for its matrix: `m` rows of `n` (dst, writable),
/// `m` rows of `k` (lhs) and `k` rows of `n` (rhs), at the given row strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_rows(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    par: gemm::Parallelism,
) {
    // SAFETY: passed on from the caller.
    unsafe {
        gemm_strided(
            (m, n, k),
            (dst, dst_rs, 1),
            (lhs, lhs_rs, 1),
            (rhs, rhs_rs, 1),
            par,
        )
    }
}

/// `dst = lhs * rhs` with any element strides: each operand is `(pointer, row
/// stride, column stride)`.
///
/// # Safety
/// Each pointer must be valid for its matrix (`m x n`, `m x k`, `k x n`) at its
/// strides; dst is overwritten, not read.
pub(crate) unsafe fn gemm_strided(
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, dst_cs): (*mut f32, usize, usize),
    (lhs, lhs_rs, lhs_cs): (*const f32, usize, usize),
    (rhs, rhs_rs, rhs_cs): (*const f32, usize, usize),
    par: gemm::Parallelism,
) {
    // SAFETY: the caller vouches for the three matrices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            false,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
