import Foundation

// A flat struct of Int and Double fields (TrainState) as one group of
// one-element datasets, `group/<snake_case field>`: int64 for Int, float64
// for Double. The struct lists its fields once; writing walks them with
// Mirror, reading goes back through the struct's own Decodable.

extension HDF5File {
    public func writeFields<T>(_ group: String, _ value: T) throws {
        for child in Mirror(reflecting: value).children {
            guard let label = child.label else { continue }
            let name = group + "/" + snakeCase(label)
            switch child.value {
            case let v as Int: try write(name, shape: [1], int64s: [Int64(v)])
            case let v as Double: try write(name, doubles: [v])
            default: throw HDF5Error("\(path): field '\(label)' of \(T.self) is neither Int nor Double")
            }
        }
    }

    /// The members of `group` decoded as T; members T does not know are ignored,
    /// fields the file lacks get T's error naming them.
    public func readFields<T: Decodable>(_ group: String, as type: T.Type) throws -> T {
        var entries: [String] = []
        let names = try members(group)
        for m in names {
            let name = group + "/" + m
            if try isInteger(name) {
                guard let v = try readInt64s(name).values.first else { throw HDF5Error("\(path): '\(name)' is empty") }
                entries.append("\"\(m)\": \(v)")
            } else {
                // Every Double prints exactly (shortest round-trip form); non-finite ones as strings.
                let v = try readDoubles(name).values
                guard let first = v.first else { throw HDF5Error("\(path): '\(name)' is empty") }
                func json(_ d: Double) -> String { d.isFinite ? "\(d)" : "\"\(d)\"" }
                entries.append("\"\(m)\": \(json(first))")
                // The first round's format: state/best = [best val loss, best val accuracy].
                if m == "best" && v.count == 2 && !names.contains("best_val_loss") {
                    entries += ["\"best_val_loss\": \(json(v[0]))", "\"best_val_accuracy\": \(json(v[1]))"]
                }
            }
        }
        let dec = JSONDecoder()
        dec.keyDecodingStrategy = .convertFromSnakeCase
        dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do {
            return try dec.decode(T.self, from: Data(("{" + entries.joined(separator: ", ") + "}").utf8))
        } catch {
            throw HDF5Error("\(path): group '\(group)' is not a valid \(T.self): \(error)")
        }
    }
}

/// "bestValLoss" -> "best_val_loss" (as JSONDecoder's convertFromSnakeCase expects).
func snakeCase(_ s: String) -> String {
    var out = ""
    for c in s {
        if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
    }
    return out
}
