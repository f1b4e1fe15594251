// One row of `TrainConfig.settings`: a field of the configuration as a user sets it.
// The rows are the one place where a field meets its option's name, its range and
// the `train` option it is read from; problems() (argv and config.json alike),
// `TrainOptions.config` and the checks of the other commands walk them.

/// A field of `TrainConfig`: how errors name it, the values it may take, and
/// the option of `train` that sets it.
struct Setting {
    let field: PartialKeyPath<TrainConfig>
    /// The option that sets the field (`--epochs`), or its config.json key where none does
    /// (`evalBatchSize`): every error names it, config.json's included, so the user knows
    /// which option to change.
    let name: String
    /// What the value must be ("in 1...1000000"), given the whole config; nil when it is.
    private let rule: (TrainConfig) -> String?
    /// Copies `train`'s option into the field; nil where `train` has no option for it.
    let option: ((TrainOptions, inout TrainConfig) -> Void)?

    /// The one-line problem of this field in `config`, named `shown` where a command calls the
    /// field by another option (bench's `--channels` is `inChannels`).
    func problem(_ config: TrainConfig, as shown: String? = nil) -> String? {
        rule(config).map { "\(shown ?? name) must be \($0)" }
    }
}

extension Setting {
    /// A field any value of its type suits (an enum, a path, a flag).
    init<V>(_ field: WritableKeyPath<TrainConfig, V>, _ name: String, from option: KeyPath<TrainOptions, V>,
            only method: TrainingMethod? = nil) {
        self.init(field: field, name: name, rule: { _ in nil }, option: Setting.copy(option, to: field, only: method))
    }

    /// A field `train` sets by a rule of its own (a default that depends on other options).
    init<V>(_ field: WritableKeyPath<TrainConfig, V>, _ name: String, by option: @escaping (TrainOptions) -> V?) {
        self.init(field: field, name: name, rule: { _ in nil }, option: { o, c in if let v = option(o) { c[keyPath: field] = v } })
    }

    /// An integer in `range`; `note` says why the range is what it is.
    init(_ field: WritableKeyPath<TrainConfig, Int>, _ name: String, in range: ClosedRange<Int>, note: String? = nil,
         from option: KeyPath<TrainOptions, Int>? = nil, only method: TrainingMethod? = nil) {
        let text = "in \(range.lowerBound)...\(range.upperBound)" + (note.map { " (\($0))" } ?? "")
        self.init(field: field, name: name, rule: { range.contains($0[keyPath: field]) ? nil : text },
                  option: option.map { Setting.copy($0, to: field, only: method) })
    }

    /// A finite number in `range` (which may depend on other fields: warm-up within the epochs), shown as `shown`.
    init(_ field: WritableKeyPath<TrainConfig, Double>, _ name: String, in range: @escaping (TrainConfig) -> ClosedRange<Double>,
         shown: String, from option: KeyPath<TrainOptions, Double>? = nil, only method: TrainingMethod? = nil) {
        self.init(field: field, name: name, rule: { range($0).contains($0[keyPath: field]) ? nil : shown },
                  option: option.map { Setting.copy($0, to: field, only: method) })
    }

    init(_ field: WritableKeyPath<TrainConfig, Double>, _ name: String, in range: ClosedRange<Double>, shown: String,
         from option: KeyPath<TrainOptions, Double>? = nil, only method: TrainingMethod? = nil) {
        self.init(field, name, in: { _ in range }, shown: shown, from: option, only: method)
    }

    /// Finite and above zero (NaN, infinities and -0 are not in it).
    static let positive = Double.leastNonzeroMagnitude...Double.greatestFiniteMagnitude

    /// `only`: an option that means something for that method alone (the transfer options);
    /// other runs keep the default, whatever was given.
    private static func copy<V>(_ option: KeyPath<TrainOptions, V>, to field: WritableKeyPath<TrainConfig, V>,
                                only method: TrainingMethod?) -> (TrainOptions, inout TrainConfig) -> Void {
        { o, c in if method == nil || o.method == method { c[keyPath: field] = o[keyPath: option] } }
    }
}
