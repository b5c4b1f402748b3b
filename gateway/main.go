// Command gateway is the Ferry daemon: it opens the durable log under the
// data directory and runs until SIGINT or SIGTERM, then closes the log
// cleanly so the next start scans nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	flog "github.com/ferry-iot/ferry/broker/log"
)

func main() {
	dataDir := flag.String("data-dir", "./data", "directory for the log and state")
	flag.Parse()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*dataDir, logger); err != nil {
		fmt.Fprintln(os.Stderr, "ferry:", err)
		os.Exit(1)
	}
}

func run(dataDir string, logger *slog.Logger) error {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := flog.Open(filepath.Join(abs, "log"), flog.WithLogger(logger))
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	for _, name := range []string{"telemetry", "attributes"} {
		if _, err := l.EnsureTopic(name, flog.TopicConfig{Compression: flog.CompressionZstd}); err != nil {
			l.Close()
			return fmt.Errorf("topic %s: %w", name, err)
		}
	}
	fmt.Printf("ferry: storing data in %s\n", abs)
	<-ctx.Done()
	fmt.Println("ferry: shutting down")
	return l.Close()
}
