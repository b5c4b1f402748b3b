package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ferry-iot/ferry/bridge"
	"github.com/ferry-iot/ferry/broker/commands"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/kafkaserver"
	"github.com/ferry-iot/ferry/broker/kafkaserver/group"
	"github.com/ferry-iot/ferry/broker/mqtt"
	"github.com/ferry-iot/ferry/broker/netguard"
	"github.com/ferry-iot/ferry/broker/registry"
	"github.com/ferry-iot/ferry/broker/state"
	"github.com/ferry-iot/ferry/devices/adapter"
)

// Daemon is a running gateway: state store, registry, log, MQTT broker,
// Kafka listener (with its group coordinator) and HTTP API, started in that order and stopped in reverse.
type Daemon struct {
	cfg     *Config
	logger  *slog.Logger
	dataDir string

	state          *state.Store
	stateMsg       string           // the damaged store's copy, when opening moved one aside
	wallClock      func() time.Time // the groups' wall clock (nil: the system's)
	reg            *registry.Registry
	log            *commitlog.Log
	mqtt           *mqtt.Server
	commands       *commands.Dispatcher
	adapters       *adapter.Manager // nil: no buses configured
	adapterSink    *adapterSink
	adapterBusErrs map[string]error // buses that could not be opened
	adapterM       *adapter.Metrics
	bridges        []*bridge.Engine
	bridgeM        *bridge.Metrics
	groups         *group.Coordinator
	kafka          *kafkaserver.Server
	http           *http.Server
	httpLn         *netguard.Listener
	httpDone       chan error
	token          string // the HTTP API's bearer token (http.admin_token or generated)
	tokenAt        string // the file a token not set in the configuration is kept in
	newToken       bool   // that file was written by this start
	fileLim        uint64 // RLIMIT_NOFILE in force
	metrics        *prometheus.Registry
	api            *apiMetrics
	streams        *streamSet    // the stream pipelines; nil without any
	wear           *wearMeter    // bytes written to the block device, the medium's projected life
	wearDone       chan struct{} // stops the wear meter
}

// Start opens everything and begins serving. On error, whatever was opened
// is closed again.
//
// The log opens with retention paused: the commands dispatcher and the
// bridges set their retention holds from their stored checkpoints as they
// start, and only then may a retention pass run, so data past its age that
// is not yet upstream (or not yet answered) survives a restart.
func Start(cfg *Config, logger *slog.Logger) (*Daemon, error) {
	return start(cfg, logger, startOptions{})
}

// startOptions are the tests' seams into start.
type startOptions struct {
	clock     *faultClock          // the wall clock of the log and the groups (faultclock.go); nil: the system's
	logOpts   []commitlog.Option   // after the daemon's own (a clock)
	afterOpen func(*commitlog.Log) // called as soon as the log is open, before anything sets a hold
}

func start(cfg *Config, logger *slog.Logger, so startOptions) (d *Daemon, err error) {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	d = &Daemon{cfg: cfg, logger: logger, dataDir: dataDir, metrics: prometheus.NewRegistry()}
	opened := d // the returns below set d to nil
	defer func() {
		if err != nil {
			opened.Close()
			d = nil
		}
	}()
	d.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.api = newAPIMetrics(d.metrics)
	listeners := netguard.NewMetrics(d.metrics)
	d.wear, d.wearDone = newWearMeter(int64(cfg.Storage.Endurance), logger), make(chan struct{})
	d.wear.register(d.metrics)
	go d.wear.run(d.wearDone)

	if d.fileLim, err = raiseFileLimit(); err != nil {
		logger.Warn("could not raise the open-file limit", "err", err)
	}
	if need := cfg.fileBudget(); d.fileLim > 0 && uint64(need) > d.fileLim {
		logger.Warn("the open-file limit is below what the connection and partition caps allow: when it is reached, new connections wait in the backlog (the listeners keep retrying); raise the limit (LimitNOFILE= in the service unit, ulimit -n) or lower mqtt.max_connections, kafka.max_connections, http.max_connections, log.max_partitions",
			"limit", d.fileLim, "caps_allow", need)
	}
	if d.token, d.tokenAt, d.newToken, err = resolveAdminToken(cfg.HTTP.AdminToken, dataDir); err != nil {
		return nil, err
	}

	if d.state, d.stateMsg, err = openState(filepath.Join(dataDir, "state"), logger); err != nil {
		return nil, fmt.Errorf("open state store: %w", err)
	}
	if d.reg, err = registry.Open(d.state); err != nil {
		return nil, fmt.Errorf("open device registry: %w", err)
	}
	if err = d.seedDevices(); err != nil {
		return nil, err
	}
	fsync := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ferry_log_fsync_seconds", Help: "Duration of the log's fsync rounds (one serves a whole commit cycle).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
	})
	d.metrics.MustRegister(fsync)
	logOpts := append(cfg.Log.Options(), commitlog.WithLogger(logger),
		commitlog.WithSyncObserver(func(t time.Duration) { fsync.Observe(t.Seconds()) }),
		commitlog.WithRetentionPaused()) // until the holds are set, below
	if so.clock != nil {
		logOpts = append(logOpts, commitlog.WithClock(so.clock))
		d.wallClock = so.clock.Now
	}
	d.log, err = commitlog.Open(filepath.Join(dataDir, "log"), append(logOpts, so.logOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	if so.afterOpen != nil {
		so.afterOpen(d.log)
	}
	d.metrics.MustRegister(&logCollector{log: d.log})
	names := make([]string, 0, len(cfg.Log.Topics))
	for name := range cfg.Log.Topics {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, err = d.log.EnsureTopic(name, cfg.Log.Topics[name]); err != nil { // validated in LoadConfig
			return nil, fmt.Errorf("log topic %s: %w", name, err)
		}
	}

	mcfg := cfg.MQTT
	mcfg.Provisioning, mcfg.Listeners, mcfg.Logger, mcfg.Metrics = cfg.Provisioning, listeners, logger, mqtt.NewMetrics(d.metrics)
	if d.mqtt, err = mqtt.New(mcfg, d.reg, d.log); err != nil {
		return nil, err
	}
	if err = d.mqtt.Start(); err != nil {
		return nil, err
	}
	d.adapterM = adapter.NewMetrics(d.metrics)
	if err = d.startAdapters(); err != nil {
		return nil, err
	}
	if err = d.startCommands(); err != nil {
		return nil, err
	}
	if err = d.startClientRPC(); err != nil {
		return nil, err
	}
	if err = d.startKafka(listeners); err != nil {
		return nil, err
	}
	if err = d.startStreams(); err != nil {
		return nil, err
	}
	if err = d.startBridges(); err != nil {
		return nil, err
	}
	// Every hold is set (commands.Start, streams, bridge.New): retention may run.
	d.log.ResumeRetention()

	hl, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
	}
	// A connection is pending until it has sent a whole request (the
	// handlers mark it); past the cap the oldest pending one is closed.
	d.httpLn = netguard.Wrap(hl, netguard.Config{Name: "http", MaxConns: cfg.HTTP.MaxConnections, Logger: logger, Metrics: listeners})
	d.http = &http.Server{
		Handler:           d.routes(),
		ReadHeaderTimeout: 10 * time.Second, // slowloris: a request's headers within 10 s
		ReadTimeout:       30 * time.Second, // and its body (at most 1 MiB) within 30 s
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ConnContext:       netguard.WithConn,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	d.httpDone = make(chan error, 1)
	go func() { d.httpDone <- d.http.Serve(d.httpLn) }()
	d.warnExposed()
	return d, nil
}

// seedDevices writes the configured devices into the registry, replacing
// what it holds under their names: the configuration is the source of
// truth for the devices it lists (the API refuses to change or delete
// them). Devices it no longer lists stay, managed through the API.
func (d *Daemon) seedDevices() error {
	var errs []error
	for i, dc := range d.cfg.Devices {
		dev := registry.Device{Name: dc.Name, Type: dc.Type, Gateway: dc.Gateway, Source: registry.SourceConfig}
		creds := registry.Credentials{Token: dc.Token, ClientID: dc.ClientID, Username: dc.Username, Password: dc.Password}
		err := d.reg.Put(dev, creds)
		switch {
		case errors.Is(err, syscall.ENOSPC):
			// A full disk must not stop the start: what the store holds
			// from earlier starts serves; the configuration is written
			// again at the next start with room.
			d.logger.Error("the disk is full: configured device not written (what the store holds from earlier starts serves)",
				"device", dc.Name, "key", fmt.Sprintf("devices[%d]", i), "err", err)
		case err != nil:
			errs = append(errs, fmt.Errorf("devices[%d] (%s): %w", i, dc.Name, err))
		}
	}
	return errors.Join(errs...)
}

// MQTTAddr and HTTPAddr are the bound listener addresses.
func (d *Daemon) MQTTAddr() net.Addr { return d.mqtt.Addr() }

// HTTPAddr is the HTTP API's bound address.
func (d *Daemon) HTTPAddr() net.Addr { return d.httpLn.Addr() }

// Close stops accepting (HTTP, then MQTT), lets every queued append commit
// and its acknowledgement go out, closes the log cleanly and the state store.
func (d *Daemon) Close() error {
	var errs []error
	if d.wearDone != nil {
		close(d.wearDone)
		d.wearDone = nil
	}
	if d.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := d.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
		cancel()
		if err := <-d.httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
	} else if d.httpLn != nil {
		d.httpLn.Close()
	}
	for _, b := range d.bridges {
		if err := b.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.kafka != nil {
		if err := d.kafka.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.groups != nil {
		if err := d.groups.Close(); err != nil {
			errs = append(errs, fmt.Errorf("kafka groups: %w", err))
		}
	}
	if d.commands != nil {
		if err := d.commands.Close(); err != nil {
			errs = append(errs, fmt.Errorf("commands: %w", err))
		}
	}
	d.stopStreams()
	if err := d.closeAdapters(); err != nil {
		errs = append(errs, fmt.Errorf("adapters: %w", err))
	}
	if d.mqtt != nil {
		if err := d.mqtt.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.log != nil {
		if err := d.log.Close(); err != nil {
			errs = append(errs, err) // names the log already
		}
	}
	if d.state != nil {
		if err := d.state.Close(); err != nil {
			errs = append(errs, fmt.Errorf("state: %w", err))
		}
	}
	return errors.Join(errs...)
}
