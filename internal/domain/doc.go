// Package domain holds safeflow's types, invariants, pure decisions and
// errors. It imports only the standard library: the store and the HTTP layer
// depend on it, never the other way round.
package domain
