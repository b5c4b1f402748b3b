package state

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	badgeropts "github.com/dgraph-io/badger/v4/options"
)

// TestBadgerOptions asserts the constraints of docs/libraries.md#badger on the
// options the Store really uses, since GOARCH=arm cannot run here.
func TestBadgerOptions(t *testing.T) {
	tests := []struct {
		name string
		dir  string
		o    options
	}{
		{"disk", "/var/lib/ferry/state", defaultOptions()},
		{"memory", "/ignored", options{inMemory: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bo := badgerOptions(tt.dir, tt.o)
			if bo.MemTableSize > 2*bo.BaseTableSize {
				t.Errorf("MemTableSize %d > 2×BaseTableSize %d: flushed tables corrupt on 32-bit ARM", bo.MemTableSize, bo.BaseTableSize)
			}
			if maxBatch := bo.MemTableSize * 15 / 100; bo.ValueThreshold > maxBatch {
				t.Errorf("ValueThreshold %d > 15%% of MemTableSize (%d)", bo.ValueThreshold, maxBatch)
			}
			if bo.ValueLogFileSize < 1<<20 || bo.ValueLogFileSize > 64<<20 {
				t.Errorf("ValueLogFileSize %d is not tens of MiB", bo.ValueLogFileSize)
			}
			if bo.MemTableSize > 16<<20 || bo.NumMemtables > 2 {
				t.Errorf("memtables %d × %d bytes: too much memory", bo.NumMemtables, bo.MemTableSize)
			}
			if bo.NumCompactors < 2 {
				t.Errorf("NumCompactors %d < 2", bo.NumCompactors)
			}
			if bo.Compression != badgeropts.None {
				t.Errorf("Compression %v, want none", bo.Compression)
			}
			if bo.BlockCacheSize != 0 {
				t.Errorf("BlockCacheSize %d, want 0 without compression", bo.BlockCacheSize)
			}
			if !bo.SyncWrites {
				t.Error("SyncWrites off: offsets and credentials would not survive power loss")
			}
			if bo.DetectConflicts {
				t.Error("conflict detection on: the Store serializes writers itself")
			}
			if tt.o.inMemory && bo.ValueThreshold <= MaxValueSize {
				t.Errorf("in-memory ValueThreshold %d <= MaxValueSize: badger would refuse large values", bo.ValueThreshold)
			}
			if !tt.o.inMemory && bo.ValueThreshold > 4<<10 {
				t.Errorf("ValueThreshold %d: small values belong in the LSM, large ones in the value log", bo.ValueThreshold)
			}
			if bo.MetricsEnabled {
				t.Error("metrics enabled")
			}
			if bo.NumLevelZeroTablesStall <= bo.NumLevelZeroTables {
				t.Errorf("L0 stall %d <= L0 tables %d", bo.NumLevelZeroTablesStall, bo.NumLevelZeroTables)
			}
			if bo.InMemory != tt.o.inMemory {
				t.Errorf("InMemory = %v", bo.InMemory)
			}
			if tt.o.inMemory && (bo.Dir != "" || bo.ValueDir != "") {
				t.Errorf("in-memory with Dir %q ValueDir %q: badger refuses", bo.Dir, bo.ValueDir)
			}
			if !tt.o.inMemory && (bo.Dir != tt.dir || bo.ValueDir != tt.dir) {
				t.Errorf("Dir %q ValueDir %q, want %q", bo.Dir, bo.ValueDir, tt.dir)
			}
		})
	}
}

func TestSlogLogger(t *testing.T) {
	var buf bytes.Buffer
	l := slogLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	l.Errorf("e %d\n", 1)
	l.Warningf("w %d\n", 2)
	l.Infof("i %d", 3)
	l.Debugf("d %d", 4)
	got := buf.String()
	for _, want := range []string{"level=ERROR msg=\"e 1\" component=badger", "level=WARN msg=\"w 2\" component=badger"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "i 3") || strings.Contains(got, "d 4") {
		t.Errorf("info/debug passed through:\n%s", got)
	}
	slogLogger{}.Errorf("nil logger must not panic")
}
