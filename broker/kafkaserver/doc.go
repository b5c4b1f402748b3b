// Package kafkaserver is Ferry's Kafka wire-protocol listener: backend services
// read the log's topics, commit offsets in consumer groups and produce
// into topics with the Kafka client they already use (franz-go,
// librdkafka/kcat, Sarama, kafka-go).
//
// Ferry is one node: controller, leader and only replica of every
// partition, and coordinator of every group. Requests are decoded and
// answered with franz-go's kmsg, one file per API, named by key
// (00_produce.go … 42_delete_groups.go), each saying which versions it
// serves; 18_api_versions.go holds the table. Fetch is the exception on
// the way out: its answer is framed by hand (fetch_write.go) so segment
// bytes go to the socket with sendfile.
//
// # Framing
//
//	request:   size int32 | api key int16 | version int16 | correlation id int32 |
//	           client id nullable string (int16 length, even in flexible versions) |
//	           [flexible: header tags] | body
//	response:  size int32 | correlation id int32 | [flexible, except ApiVersions: tags 0x00] | body
//
// # Connections
//
// Each connection has a reader goroutine that decodes and handles one
// request at a time, in order, as a Kafka broker does, and a writer
// goroutine that writes answers in request order. Produce answers are
// built by the writer after the appends are durable, so the reader goes on
// decoding pipelined requests meanwhile and they share commit cycles.
// Blocking requests (Fetch long polls, JoinGroup, SyncGroup) block only
// their connection's reader. Frames above MaxRequestBytes close the
// connection before anything is allocated; a frame's buffer grows as its
// bytes arrive. A request that cannot be parsed closes the connection (as
// Kafka does) and is counted. An API or version Ferry does not serve is
// answered with its own response type, UNSUPPORTED_VERSION in the error
// code of every resource it names (unsupported.go); one whose answer has
// no place for the code is closed, as Kafka closes them all.
//
// # Lock order
//
// Server.mu (connection set) is never held while calling anything else.
// producerState.mu (one producer on one partition) is held across the
// sequence check and the queueing append, and may take the log's
// partition lock inside; producers.mu is never held across either.
package kafkaserver
