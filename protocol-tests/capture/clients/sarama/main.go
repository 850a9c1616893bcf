// Command sarama-capture is the capture scenario for sarama 1.22 (Debian's
// golang-github-shopify-sarama-dev), run by protocol-tests/capture/capture.py, which
// builds it in a temporary directory in GOPATH mode
// (GO111MODULE=off GOPATH=/usr/share/gocode go build).
//
//	sarama-capture BOOTSTRAP TOPIC GROUP
//
// ClusterAdmin: CreateTopic (2 partitions), ListTopics, DescribeConfig of TOPIC; a
// SyncProducer sends key-0..4 uncompressed, another with Compression=GZIP key-5..9
// (record i to partition i % 2); a ConsumerGroup member of GROUP reads the 10 records from
// the oldest offset, marks them, commits when its session ends and leaves on Close. It
// prints one JSON line with what was read.
//
// Config.Version is V2_1_0_0 as in compat/: sarama's default (0.8.2) would send Produce
// v0, which Kafka 4.0 and Runnel no longer accept. Everything else is sarama's default,
// except the manual partitioner (for i % 2) and Producer.Return.Successes (SyncProducer).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const deadline = 15 * time.Second

type obj = map[string]interface{}

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_1_0_0
	c.ClientID = "capture-sarama"
	return c
}

// value is record i's value, the same for every client: text that gzip shrinks.
func value(i int) string {
	return fmt.Sprintf("value %d: ", i) + strings.Repeat("the quick brown fox jumps over the lazy dog; ", 4)
}

type handler struct {
	mu   sync.Mutex
	got  [][]interface{}
	done chan struct{}
	once sync.Once
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		s.MarkMessage(msg, "")
		h.mu.Lock()
		h.got = append(h.got, []interface{}{msg.Partition, msg.Offset, string(msg.Key)})
		if len(h.got) >= 10 {
			h.once.Do(func() { close(h.done) })
		}
		h.mu.Unlock()
	}
	return nil
}

func run(bootstrap, topic, group string) (obj, error) {
	brokers := []string{bootstrap}
	admin, err := sarama.NewClusterAdmin(brokers, config())
	if err != nil {
		return nil, fmt.Errorf("admin: %v", err)
	}
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); err != nil {
		return nil, fmt.Errorf("create topic: %v", err)
	}
	topics, err := admin.ListTopics()
	if err != nil {
		return nil, fmt.Errorf("list topics: %v", err)
	}
	if _, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic}); err != nil {
		return nil, fmt.Errorf("describe config: %v", err)
	}
	if err := admin.Close(); err != nil {
		return nil, fmt.Errorf("admin close: %v", err)
	}

	acked := 0
	for _, codec := range []sarama.CompressionCodec{sarama.CompressionNone, sarama.CompressionGZIP} {
		c := config()
		c.Producer.Return.Successes = true
		c.Producer.Partitioner = sarama.NewManualPartitioner
		c.Producer.Compression = codec
		p, err := sarama.NewSyncProducer(brokers, c)
		if err != nil {
			return nil, fmt.Errorf("producer: %v", err)
		}
		first := 0
		if codec == sarama.CompressionGZIP {
			first = 5
		}
		var msgs []*sarama.ProducerMessage
		for i := first; i < first+5; i++ {
			msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Partition: int32(i % 2),
				Key: sarama.StringEncoder(fmt.Sprintf("key-%d", i)), Value: sarama.StringEncoder(value(i))})
		}
		if err := p.SendMessages(msgs); err != nil {
			return nil, fmt.Errorf("send: %v", err)
		}
		acked += len(msgs)
		if err := p.Close(); err != nil {
			return nil, fmt.Errorf("producer close: %v", err)
		}
	}

	c := config()
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	cg, err := sarama.NewConsumerGroup(brokers, group, c)
	if err != nil {
		return nil, fmt.Errorf("consumer group: %v", err)
	}
	h := &handler{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	consumed := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := cg.Consume(ctx, []string{topic}, h); err != nil {
				consumed <- err
				return
			}
		}
		consumed <- nil
	}()
	select {
	case <-h.done:
	case <-time.After(deadline):
	}
	cancel() // ends the session: offsets are committed, then Consume returns
	if err := <-consumed; err != nil {
		return nil, fmt.Errorf("consume: %v", err)
	}
	if err := cg.Close(); err != nil { // LeaveGroup
		return nil, fmt.Errorf("consumer group close: %v", err)
	}
	var names []string
	for name := range topics {
		if name == topic {
			names = append(names, name)
		}
	}
	return obj{"topics": names, "acked": acked, "consumed": h.got}, nil
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: sarama-capture BOOTSTRAP TOPIC GROUP")
		os.Exit(2)
	}
	result, err := run(os.Args[1], os.Args[2], os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if got := len(result["consumed"].([][]interface{})); got != 10 {
		fmt.Fprintf(os.Stderr, "read %d records, not 10\n", got)
		os.Exit(1)
	}
	out, _ := json.Marshal(result)
	fmt.Println(string(out))
}
