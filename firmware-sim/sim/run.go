package sim

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"
)

// Run simulates cfg.Devices devices until each has sent cfg.Messages
// telemetry messages (and had them acknowledged) or ctx ends, and returns
// the final Summary. progress, if not nil, gets a Summary once a second
// from Run's own goroutine.
//
// Run returns only after every device goroutine, every paho client and
// every token waiter has stopped. When ctx ends during a broker outage,
// that can take up to two reconnect backoffs plus a connect timeout
// (about 25 s), because paho's reconnect loop cannot be interrupted.
//
// The error is the config's problems (and nothing was started), or the
// joined failures of devices that gave up: a refused login (RefusedError)
// or a failed provisioning (ProvisionError). The other devices run on.
func Run(ctx context.Context, cfg Config, progress func(Summary)) (Summary, error) {
	cfg.EnsureDefaults()
	if err := cfg.Validate(); err != nil {
		return Summary{Devices: cfg.Devices}, err
	}
	cfg.Shapes = slices.Clone(cfg.Shapes)

	st := &stats{}
	errs := make([]error, cfg.Devices)
	var wg sync.WaitGroup
	for i := range cfg.Devices {
		d := newDevice(i, &cfg, st)
		delay := cfg.StartSpread * time.Duration(i) / time.Duration(cfg.Devices)
		wg.Go(func() { errs[i] = d.run(ctx, delay) })
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return st.summary(cfg.Devices, true), errors.Join(errs...)
		case <-tick.C:
			if progress != nil {
				progress(st.summary(cfg.Devices, false))
			}
		}
	}
}
