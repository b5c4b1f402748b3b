package kafkaserver

// CreateTopics (key 19), versions 0-7.
//
// Replication factor must be -1 or 1 (one node). Topic configs are Kafka's
// names, mapped onto the log's TopicConfig: cleanup.policy,
// retention.ms (-1: forever), retention.bytes, segment.bytes, segment.ms,
// compression.type (producer keeps what the producer sent; none, gzip,
// snappy, lz4, zstd set the codec of batches Ferry builds itself),
// max.message.bytes, delete.retention.ms, min.cleanable.dirty.ratio, and
// Ferry's own ferry.flush (always, interval, never) and ferry.on_full
// (overwrite_oldest, reject_new). Anything else is INVALID_CONFIG, named in
// the error message. A topic of more than maxPartitions partitions is
// INVALID_PARTITIONS; one that would pass the log's caps on topics or
// partitions in all (log.max_topics, log.max_partitions) is
// POLICY_VIOLATION, with the cap in the message.

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

const maxPartitions = 1024

func handleCreateTopics(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.CreateTopicsRequest)
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic = rt.Topic
		code, msg, cfg := topicConfigFrom(c.s.cfg.TopicDefaults, rt)
		if code == 0 {
			if err := commitlog.ValidTopicName(rt.Topic); err != nil {
				code, msg = kerr.InvalidTopicException.Code, err.Error()
			} else if _, err := c.s.log.Topic(rt.Topic); err == nil {
				code, msg = kerr.TopicAlreadyExists.Code, "topic "+rt.Topic+" already exists"
			}
		}
		if code == 0 && !req.ValidateOnly {
			if _, err := c.s.log.CreateTopic(rt.Topic, cfg); err != nil {
				code, msg = kerr.UnknownServerError.Code, err.Error()
				switch {
				case errors.Is(err, commitlog.ErrTopicExists):
					code = kerr.TopicAlreadyExists.Code
				case errors.Is(err, commitlog.ErrInvalidConfig):
					code = kerr.InvalidConfig.Code
				case errors.Is(err, commitlog.ErrLimit):
					// The broker's own policy refuses it, as Kafka (4.0,
					// KAFKA-17870) refuses a request for too many partitions.
					code = kerr.PolicyViolation.Code
					c.s.limiter.Warn(c.s.logger, "topic_limit", "kafkaserver: topic not created: "+err.Error(),
						"topic", rt.Topic, "client", r.clientID, "remote", c.remote)
				}
			} else {
				c.s.logger.Info("kafkaserver: created topic", "topic", rt.Topic, "partitions", cfg.Partitions, "client", r.clientID)
			}
		}
		st.ErrorCode = code
		if msg != "" {
			st.ErrorMessage = kmsg.StringPtr(msg)
		}
		if code == 0 {
			st.NumPartitions, st.ReplicationFactor = int32(cfg.Partitions), 1
		}
		resp.Topics = append(resp.Topics, st)
	}
	return &outbound{resp: resp}
}

func topicConfigFrom(def commitlog.TopicConfig, rt kmsg.CreateTopicsRequestTopic) (int16, string, commitlog.TopicConfig) {
	cfg := def
	switch {
	case rt.ReplicationFactor != -1 && rt.ReplicationFactor != 1:
		return kerr.InvalidReplicationFactor.Code, "Ferry is one node: replication factor must be 1", cfg
	case len(rt.ReplicaAssignment) > 0:
		return kerr.InvalidReplicaAssignment.Code, "manual replica assignment is not supported", cfg
	case rt.NumPartitions == 0 || rt.NumPartitions < -1 || rt.NumPartitions > maxPartitions:
		return kerr.InvalidPartitions.Code, fmt.Sprintf("partitions must be 1..%d", maxPartitions), cfg
	case rt.NumPartitions > 0:
		cfg.Partitions = int(rt.NumPartitions)
	}
	for _, kv := range rt.Configs {
		if kv.Value == nil {
			continue
		}
		if err := setTopicConfig(&cfg, kv.Name, *kv.Value); err != nil {
			return kerr.InvalidConfig.Code, err.Error(), cfg
		}
	}
	check := cfg
	check.EnsureDefaults()
	if err := check.Validate(); err != nil {
		return kerr.InvalidConfig.Code, err.Error(), cfg
	}
	return 0, "", cfg
}

func setTopicConfig(cfg *commitlog.TopicConfig, name, v string) error {
	bad := func(err error) error { return fmt.Errorf("config %s=%q: %w", name, v, err) }
	ms := func() (time.Duration, error) {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, bad(err)
		}
		if n < 0 {
			return -1, nil
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	var err error
	switch name {
	case "cleanup.policy":
		cfg.Cleanup = commitlog.CleanupPolicy(v)
	case "retention.ms":
		cfg.Retention, err = ms()
	case "retention.bytes":
		cfg.RetentionBytes, err = strconv.ParseInt(v, 10, 64)
	case "segment.bytes":
		cfg.SegmentBytes, err = strconv.ParseInt(v, 10, 64)
	case "segment.ms":
		cfg.SegmentAge, err = ms()
	case "delete.retention.ms":
		cfg.DeleteRetention, err = ms()
	case "max.message.bytes":
		cfg.MaxBatchBytes, err = strconv.Atoi(v)
	case "min.cleanable.dirty.ratio":
		cfg.MinCleanableDirtyRatio, err = strconv.ParseFloat(v, 64)
	case "compression.type":
		if v != "producer" && v != "uncompressed" {
			cfg.Compression, err = commitlog.ParseCompression(v)
		}
	case "ferry.flush":
		cfg.Flush = commitlog.FlushPolicy(v)
	case "ferry.on_full":
		cfg.OnFull = commitlog.OnFull(v)
	default:
		return fmt.Errorf("config %s is not supported", name)
	}
	if err != nil {
		return bad(err)
	}
	return nil
}
