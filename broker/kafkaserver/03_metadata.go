package kafkaserver

// Metadata (key 3), versions 0-12.
//
// One node: it is the controller, the leader and the only replica of every
// partition. v0 with an empty topic list, and v1+ with a null list, mean
// every topic. Topic IDs (v10+) are all zeros: Fetch stops at v12, which
// addresses topics by name. Unknown topics are created when the request
// allows it (v4+, always before v4) and kafka.auto_create_topics is on.

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

func handleMetadata(c *conn, r *request) *outbound {
	req := r.kreq.(*kmsg.MetadataRequest)
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	s := c.s
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = s.cfg.NodeID, s.advHost, s.advPort
	resp.Brokers = []kmsg.MetadataResponseBroker{b}
	resp.ClusterID = &s.cfg.ClusterID
	resp.ControllerID = s.cfg.NodeID

	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	if all {
		for _, t := range s.log.Topics() {
			resp.Topics = append(resp.Topics, s.topicMetadata(t.Name(), t, nil))
		}
		return &outbound{resp: resp}
	}
	autoCreate := s.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
	for _, rt := range req.Topics {
		if rt.Topic == nil {
			mt := kmsg.NewMetadataResponseTopic()
			mt.ErrorCode = kerr.UnknownTopicID.Code
			mt.TopicID = rt.TopicID
			resp.Topics = append(resp.Topics, mt)
			continue
		}
		name := *rt.Topic
		t, err := s.log.Topic(name)
		if errors.Is(err, commitlog.ErrUnknownTopic) && autoCreate {
			t, err = s.createTopic(name, s.cfg.TopicDefaults)
		}
		resp.Topics = append(resp.Topics, s.topicMetadata(name, t, err))
	}
	return &outbound{resp: resp}
}

// createTopic creates a topic, tolerating a concurrent creation.
func (s *Server) createTopic(name string, cfg commitlog.TopicConfig) (*commitlog.Topic, error) {
	t, err := s.log.CreateTopic(name, cfg)
	if errors.Is(err, commitlog.ErrTopicExists) {
		return s.log.Topic(name)
	}
	switch {
	case err == nil:
		s.logger.Info("kafkaserver: created topic", "topic", name, "partitions", t.NumPartitions())
	case errors.Is(err, commitlog.ErrLimit):
		s.limiter.Warn(s.logger, "topic_limit", "kafkaserver: topic not auto-created: "+err.Error(), "topic", name)
	}
	return t, err
}

func (s *Server) topicMetadata(name string, t *commitlog.Topic, err error) kmsg.MetadataResponseTopic {
	mt := kmsg.NewMetadataResponseTopic()
	mt.Topic = kmsg.StringPtr(name)
	if err != nil {
		mt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		if errors.Is(err, commitlog.ErrInvalidConfig) || commitlog.ValidTopicName(name) != nil {
			mt.ErrorCode = kerr.InvalidTopicException.Code
		}
		return mt
	}
	self := []int32{s.cfg.NodeID}
	for _, p := range t.Partitions() {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = p.ID()
		mp.Leader = s.cfg.NodeID
		mp.LeaderEpoch = 0
		mp.Replicas, mp.ISR = self, self
		mt.Partitions = append(mt.Partitions, mp)
	}
	return mt
}
