//go:build !race

package streams

const raceScale = 1
