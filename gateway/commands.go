package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/ferry-iot/ferry/broker/commands"
	"github.com/ferry-iot/ferry/broker/commitlog"
	"github.com/ferry-iot/ferry/broker/mqtt"
)

// startCommands turns records in commands.topic into device RPC
// (commands.topic empty: off).
func (d *Daemon) startCommands() error {
	cc := d.cfg.Commands
	if cc.Topic == "" {
		return nil
	}
	var err error
	d.commands, err = commands.New(commands.Config{
		Topic: cc.Topic, Responses: cc.Responses, Timeout: d.cfg.RPC.Timeout, Expiry: cc.Expiry,
		Logger: d.logger, Metrics: commands.NewMetrics(d.metrics),
	}, d.log, d.state, deviceSender{mqtt: mqttSender{d.mqtt}, adapters: d.adapters})
	if err != nil {
		return fmt.Errorf("commands: %w", err)
	}
	d.mqtt.OnRPCReady(d.commands.DeviceOnline)
	if d.adapters != nil {
		d.adapters.OnOnline(d.commands.DeviceOnline)
	}
	if err := d.commands.Start(); err != nil {
		return fmt.Errorf("commands: %w", err)
	}
	return nil
}

// startClientRPC forwards client-side RPC requests to a backend through
// rpc.client_requests and rpc.client_replies (empty: off).
func (d *Daemon) startClientRPC() error {
	rc := d.cfg.RPC
	if rc.ClientRequests == "" {
		return nil
	}
	var topics [2]*commitlog.Topic
	for i, name := range []string{rc.ClientRequests, rc.ClientReplies} {
		t, err := d.log.Topic(name)
		if errors.Is(err, commitlog.ErrUnknownTopic) {
			t, err = d.log.CreateTopic(name, commitlog.TopicConfig{Partitions: 1})
		}
		if err != nil {
			return fmt.Errorf("rpc client topic %s: %w", name, err)
		}
		topics[i] = t
	}
	d.mqtt.StartClientRPC(mqtt.ClientRPCConfig{Requests: topics[0], Replies: topics[1], Timeout: rc.ClientTimeout})
	return nil
}

// mqttSender delivers commands through the MQTT broker's server-side RPC,
// mapping its errors onto the ones the dispatcher acts on.
type mqttSender struct{ srv *mqtt.Server }

func (s mqttSender) RPC(ctx context.Context, r commands.Request) (json.RawMessage, error) {
	resp, err := s.srv.RPC(ctx, mqtt.RPCRequest{Device: r.Device, Method: r.Method, Params: r.Params, Timeout: r.Timeout, OneWay: r.OneWay})
	switch {
	case err == nil:
		return resp, nil
	case errors.Is(err, mqtt.ErrDeviceOffline), errors.Is(err, mqtt.ErrNotSubscribed), errors.Is(err, mqtt.ErrShuttingDown):
		return nil, fmt.Errorf("%w: %w", commands.ErrOffline, err) // waits for the device
	case errors.Is(err, mqtt.ErrUnknownDevice):
		return nil, fmt.Errorf("%w: %w", commands.ErrUnknownDevice, err)
	case errors.Is(err, mqtt.ErrRPCTimeout):
		return nil, fmt.Errorf("%w: %w", commands.ErrTimeout, err)
	}
	return nil, err
}
