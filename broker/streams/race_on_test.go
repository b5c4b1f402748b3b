//go:build race

package streams

// raceScale divides the crash tests' input under the race detector, which
// slows decoding about tenfold; the kills and cuts stay as many.
const raceScale = 4
