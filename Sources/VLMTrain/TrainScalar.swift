import COpenBLAS
import Foundation
import VLMCore

/// The floating-point types the reference trainer runs in: `Float` for training, `Double` for gradient checks.
///
/// Every op and the whole model are generic over this protocol, so the same code is checked by finite differences
/// in `Double` and trained in `Float`.
public protocol TrainScalar: BinaryFloatingPoint, Sendable {
    static func exp(_ x: Self) -> Self
    static func log(_ x: Self) -> Self
    static func tanh(_ x: Self) -> Self
    static func cos(_ x: Self) -> Self
    /// Row-major `C = alpha · op(A) · op(B) + beta · C` through OpenBLAS (`cblas_sgemm` / `cblas_dgemm`).
    static func blasGemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Self,
        a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
        beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
}

@inline(__always)
private func cblasTranspose(_ t: Bool) -> CBLAS_TRANSPOSE { t ? CblasTrans : CblasNoTrans }

extension Float: TrainScalar {
    @inlinable public static func exp(_ x: Float) -> Float { Foundation.expf(x) }
    @inlinable public static func log(_ x: Float) -> Float { Foundation.logf(x) }
    /// tanh as a rational function (Eigen's `generic_fast_tanh_float`): no libm call, so loops over it vectorize;
    /// glibc's `tanhf` took a third of a training step. Within 5e-7 of `tanh` everywhere (a few ulps; checked by a test).
    @inlinable public static func tanh(_ x: Float) -> Float {
        let c: Float = 7.90531110763549805
        let v = min(max(x, -c), c)
        let x2 = v * v
        var p: Float = -2.76076847742355e-16
        p = p * x2 + 2.00018790482477e-13
        p = p * x2 - 8.60467152213735e-11
        p = p * x2 + 5.12229709037114e-08
        p = p * x2 + 1.48572235717979e-05
        p = p * x2 + 6.37261928875436e-04
        p = p * x2 + 4.89352455891786e-03
        p *= v
        var q: Float = 1.19825839466702e-06
        q = q * x2 + 1.18534705686654e-04
        q = q * x2 + 2.26843463243900e-03
        q = q * x2 + 4.89352518554385e-03
        return p / q
    }
    @inlinable public static func cos(_ x: Float) -> Float { Foundation.cosf(x) }
    public static func blasGemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor, cblasTranspose(transA), cblasTranspose(transB),
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }
}

extension Double: TrainScalar {
    @inlinable public static func exp(_ x: Double) -> Double { Foundation.exp(x) }
    @inlinable public static func log(_ x: Double) -> Double { Foundation.log(x) }
    @inlinable public static func tanh(_ x: Double) -> Double { Foundation.tanh(x) }
    @inlinable public static func cos(_ x: Double) -> Double { Foundation.cos(x) }
    public static func blasGemm(
        transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
        a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
        beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int
    ) {
        cblas_dgemm(CblasRowMajor, cblasTranspose(transA), cblasTranspose(transB),
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb),
                    beta, c, blasint(ldc))
    }
}

/// Which implementation computes matrix products.
public enum MatmulBackend: String, Sendable, CaseIterable {
    /// OpenBLAS (`cblas_sgemm` / `cblas_dgemm`): what training uses.
    case blas
    /// Plain Swift loops: slow, but with no dependency, so the gradient tests check the math and not the library.
    case reference
}

/// Row-major general matrix product `C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C`.
///
/// `op(A)` is `A` stored `[m, k]` with leading dimension `lda`, or with `transA` the transpose of an `A` stored `[k, m]`.
@inline(__always)
func gemm<T: TrainScalar>(
    _ backend: MatmulBackend, transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T = 1,
    a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
    beta: T, c: UnsafeMutablePointer<T>, ldc: Int
) {
    guard m > 0, n > 0 else { return }
    switch backend {
    case .blas:
        T.blasGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha,
                   a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    case .reference:
        for i in 0..<m {
            for j in 0..<n {
                var sum: T = 0
                for p in 0..<k {
                    let av = transA ? a[p * lda + i] : a[i * lda + p]
                    let bv = transB ? b[j * ldb + p] : b[p * ldb + j]
                    sum += av * bv
                }
                let old: T = beta == 0 ? 0 : beta * c[i * ldc + j]
                c[i * ldc + j] = alpha * sum + old
            }
        }
    }
}

/// A fixed-size, zero-initialised block of scalars that owns its memory (freed in `deinit`).
///
/// Parameters, gradients and each AdamW moment live in one `Buffer` each (llm.c's layout); tensors are offsets into it.
public final class Buffer<T: TrainScalar> {
    public let count: Int
    public let pointer: UnsafeMutablePointer<T>

    public init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { pointer.deallocate() }

    public func zero() { pointer.update(repeating: 0, count: count) }

    public subscript(i: Int) -> T {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }

    public var array: [T] { Array(UnsafeBufferPointer(start: pointer, count: count)) }

    /// A pointer `offset` scalars into the buffer.
    @inline(__always) public func at(_ offset: Int) -> UnsafeMutablePointer<T> { pointer + offset }
}

/// The trainer's seeded generator (VLMCore's SplitMix64 plus normal draws): the same seed gives the same parameters and data order everywhere.
public struct SeededRNG: RandomNumberGenerator, Sendable {
    private var rng: SplitMix64

    public init(seed: UInt64) { rng = SplitMix64(seed: seed &+ 0x9E37_79B9_7F4A_7C15) }

    public mutating func next() -> UInt64 { rng.next() }

    /// A uniform double in [0, 1) with 53 random bits.
    public mutating func uniform() -> Double { rng.unit() }

    /// A standard normal draw (Box-Muller; one draw per call, so the stream does not depend on call pairing).
    public mutating func normal() -> Double {
        let u1 = max(uniform(), 0x1.0p-60)
        let u2 = uniform()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }
}
