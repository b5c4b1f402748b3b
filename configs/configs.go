// Package configs holds ferry.yaml, the documented configuration with
// every key at its default, embedded so the daemon's defaults and the file
// users read are the same bytes.
package configs

import _ "embed"

// Default is configs/ferry.yaml.
//
//go:embed ferry.yaml
var Default []byte
