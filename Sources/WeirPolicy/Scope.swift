/// Whether the models of a rule each have their own budget or share one.
public enum Scope: String, Sendable, CaseIterable {
    /// Each model has its own budget: the limit key's scope is `<api>/<model>` (the default).
    case perModel = "per-model"
    /// All the rule's models draw on one budget: the key's scope is `<api>/<rule name>`.
    case shared
}
