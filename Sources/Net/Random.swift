import Foundation

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64: small and fast.
/// No checkpoint stores a generator: each stream is seeded again from the run's
/// seed and where it is (the epoch for data order, epoch and image for an
/// augmentation), so a resumed run draws what an uninterrupted one would.
public struct Xoshiro256: RandomNumberGenerator, Codable, Sendable, Equatable {
    public var s: [UInt64]

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = [splitmix(), splitmix(), splitmix(), splitmix()]
    }

    public mutating func next() -> UInt64 {
        let result = ((s[1] &* 5) << 7 | (s[1] &* 5) >> 57) &* 9
        let t = s[1] << 17
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t
        s[3] = (s[3] << 45) | (s[3] >> 19)
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }

    /// Standard normal by Box-Muller (one value per call; simple and exact enough).
    public mutating func normal() -> Double {
        var u1 = unit()
        while u1 <= 0 { u1 = unit() }
        let u2 = unit()
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }
}
