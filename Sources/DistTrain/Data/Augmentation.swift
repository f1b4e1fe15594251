import Foundation
import Net

/// Random but reproducible augmentation of one training sample, drawn from
/// an RNG seeded by (seed, epoch, sample index): the same on any number of
/// ranks, and the same again after a resume.
public struct Augmentation: Sendable, Equatable {
    public var rotation = 0.0       // radians
    public var scale = 1.0          // > 1 zooms in
    public var shiftX = 0.0, shiftY = 0.0  // in units of half the image
    public var flip = false
    public var brightness = 0.0     // added, in [0, 1] pixel units
    public var contrast = 1.0       // around mid-gray

    public static let identity = Augmentation()

    /// Ranges: rotation +-10 deg, scale 0.9..1.1, shift +-8 %, flip p = 0.5,
    /// brightness +-0.1, contrast 0.9..1.1.
    public static func random(seed: UInt64, epoch: Int, index: Int) -> Augmentation {
        var rng = Xoshiro256(seed: seed &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(epoch) &* 0xBF58_476D_1CE4_E5B9 ^ UInt64(index) &+ 0x94D0_49BB)
        var a = Augmentation()
        a.rotation = rng.uniform(-10, 10) * Double.pi / 180
        a.scale = rng.uniform(0.9, 1.1)
        a.shiftX = rng.uniform(-0.08, 0.08) * 2
        a.shiftY = rng.uniform(-0.08, 0.08) * 2
        a.flip = rng.unit() < 0.5
        a.brightness = rng.uniform(-0.1, 0.1)
        a.contrast = rng.uniform(0.9, 1.1)
        return a
    }
}
