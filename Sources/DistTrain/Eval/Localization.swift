/// How well maps point at known lesions: the pointing game (is the map's
/// maximum inside the mask?) and the share of the map's energy inside the mask.
public struct Localization: Codable, Sendable {
    public var method: String
    public var images: Int
    public var pointingGame: Double
    public var energyInside: Double
    /// The energy share a uniform map would have (the mask's area fraction).
    public var chance: Double

    public static func score(method: String, maps: [[Float]], masks: [[UInt8]]) -> Localization {
        var hits = 0.0, energy = 0.0, area = 0.0
        for (m, k) in zip(maps, masks) {
            let peak = m.indices.max { m[$0] < m[$1] }!
            if k[peak] > 127 { hits += 1 }
            var inside = 0.0, total = 0.0
            for i in m.indices { total += Double(m[i]); if k[i] > 127 { inside += Double(m[i]) } }
            energy += total > 0 ? inside / total : 0
            area += Double(k.filter { $0 > 127 }.count) / Double(k.count)
        }
        let n = Double(max(maps.count, 1))
        return Localization(method: method, images: maps.count, pointingGame: hits / n, energyInside: energy / n, chance: area / n)
    }
}
