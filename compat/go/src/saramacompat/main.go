// Command saramacompat drives the end-to-end scenario with stock sarama 1.22 (Debian's
// golang-github-shopify-sarama-dev), for compat/test_sarama.py.
//
//	saramacompat BOOTSTRAP scenario TOPIC   create, produce in every codec, read back,
//	                                        list offsets, describe configs, delete
//	saramacompat BOOTSTRAP produce TOPIC    produce the same records to an existing topic
//	saramacompat BOOTSTRAP consume TOPIC    read every record (and every batch's codec)
//	saramacompat BOOTSTRAP create TOPIC     create TOPIC as the scenario does
//	saramacompat BOOTSTRAP admin-v0 TOPIC   ClusterAdmin.DescribeConfig and ListTopics,
//	                                        which sarama 1.22 sends as DescribeConfigs v0
//	saramacompat BOOTSTRAP group-member TOPIC GROUP NAME SESSION_MS
//	saramacompat BOOTSTRAP group-admin TOPIC GROUP STEPS
//	                                        consumer groups: see group.go
//
// It prints one JSON object on stdout; each step records what the client saw, or
// {"error": ...}. The Python test does the asserting. Build in GOPATH mode:
// GO111MODULE=off GOPATH=/usr/share/gocode:<this compat/go> go build saramacompat
// (cgo on: sarama's zstd is the cgo binding to libzstd).
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"strings"
	"time"

	"github.com/Shopify/sarama"
)

const (
	partitions      = 3
	recordsPerCodec = 12
)

var codecNames = []string{"none", "gzip", "snappy", "lz4", "zstd"}

var codecs = map[string]sarama.CompressionCodec{
	"none":   sarama.CompressionNone,
	"gzip":   sarama.CompressionGZIP,
	"snappy": sarama.CompressionSnappy,
	"lz4":    sarama.CompressionLZ4,
	"zstd":   sarama.CompressionZSTD,
}

// Set at creation; the test expects them back from DescribeConfigs.
var createConfigs = map[string]string{"max.message.bytes": "2097152", "retention.bytes": "1073741824"}

type obj = map[string]interface{}

func hexOrNil(b []byte) interface{} {
	if b == nil {
		return nil
	}
	return hex.EncodeToString(b)
}

func errObj(err error) obj {
	return obj{"error": err.Error(), "error_type": fmt.Sprintf("%T", err)}
}

func millis(t time.Time) int64 { return t.UnixNano() / int64(time.Millisecond) }

func newConfig() *sarama.Config {
	c := sarama.NewConfig()
	// The newest version sarama 1.22 knows; it enables record headers and zstd. Whatever
	// the setting, sarama 1.22 sends Produce v3, Fetch v4, ListOffsets v1, Metadata v5,
	// CreateTopics v2, DeleteTopics v1 (and DescribeConfigs v0 from ClusterAdmin).
	c.Version = sarama.V2_1_0_0
	c.ClientID = "runnel-compat-sarama"
	c.Net.DialTimeout = 5 * time.Second
	c.Net.ReadTimeout = 15 * time.Second
	c.Net.WriteTimeout = 15 * time.Second
	c.Metadata.Retry.Max = 5
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewManualPartitioner
	c.Producer.Retry.Max = 3
	c.Producer.Retry.Backoff = 200 * time.Millisecond
	// One request (so one batch per partition) per codec.
	c.Producer.Flush.Messages = recordsPerCodec
	c.Producer.Flush.Frequency = 500 * time.Millisecond
	c.Consumer.Return.Errors = true
	c.Consumer.MaxWaitTime = 100 * time.Millisecond
	c.Admin.Timeout = 10 * time.Second
	return c
}

type header struct {
	k string
	v []byte
}

type record struct {
	codec     string
	i         int
	partition int32
	key       []byte
	value     []byte
	headers   []header
	timestamp int64
}

// recordsFor mirrors compat/js/roundtrip.js: keyed records on explicit partitions,
// timestamps increasing across the run, headers (repeated and binary too), one null key,
// one null value, one large value and one record without headers.
func recordsFor(codec string, codecIndex int, baseTs int64) []record {
	var out []record
	for i := 0; i < recordsPerCodec; i++ {
		global := codecIndex*recordsPerCodec + i
		var key []byte
		if i != recordsPerCodec-1 {
			key = []byte(fmt.Sprintf("key-%s-%d", codec, i))
		}
		var value []byte
		switch i {
		case 1:
			value = nil
		case 2:
			value = []byte(strings.Repeat(fmt.Sprintf("large %s ", codec), 3000))
		default:
			value = []byte(fmt.Sprintf("value %s #%d — grüße ✓", codec, i))
		}
		var headers []header
		if i != 4 {
			headers = append(headers,
				header{"codec", []byte(codec)},
				header{"index", []byte(fmt.Sprint(i))},
				header{"bin", []byte{0, 255, byte(i), 10}})
			if i%3 == 0 {
				headers = append(headers, header{"dup", []byte("first")}, header{"dup", []byte("second")})
			}
		}
		out = append(out, record{codec, i, int32(i % partitions), key, value, headers, baseTs + int64(global)*1000})
	}
	return out
}

func encoderOf(b []byte) sarama.Encoder {
	if b == nil {
		return nil
	}
	return sarama.ByteEncoder(b)
}

func produceAll(bootstrap, topic string) obj {
	baseTs := millis(time.Now()) - 2*3600*1000
	produced := []obj{}
	sends := obj{}
	for ci, codec := range codecNames {
		cfg := newConfig()
		cfg.Producer.Compression = codecs[codec]
		producer, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
		if err != nil {
			sends[codec] = errObj(err)
			continue
		}
		records := recordsFor(codec, ci, baseTs)
		msgs := make([]*sarama.ProducerMessage, len(records))
		for n, r := range records {
			var hs []sarama.RecordHeader
			for _, h := range r.headers {
				hs = append(hs, sarama.RecordHeader{Key: []byte(h.k), Value: h.v})
			}
			msgs[n] = &sarama.ProducerMessage{
				Topic:     topic,
				Partition: r.partition,
				Key:       encoderOf(r.key),
				Value:     encoderOf(r.value),
				Headers:   hs,
				Timestamp: time.Unix(0, r.timestamp*int64(time.Millisecond)),
			}
		}
		if err := producer.SendMessages(msgs); err != nil {
			sends[codec] = errObj(err)
		} else {
			sends[codec] = obj{"ok": true}
		}
		for n, r := range records {
			hs := [][]interface{}{}
			for _, h := range r.headers {
				hs = append(hs, []interface{}{h.k, hexOrNil(h.v)})
			}
			produced = append(produced, obj{
				"codec": codec, "i": r.i, "partition": msgs[n].Partition, "offset": msgs[n].Offset,
				"key": hexOrNil(r.key), "value": hexOrNil(r.value), "headers": hs, "timestamp": r.timestamp,
			})
		}
		if err := producer.Close(); err != nil {
			sends[codec+"_close"] = errObj(err)
		}
	}
	return obj{"produced": produced, "sends": sends}
}

// consumeAll reads every partition from the oldest offset to the high watermark with
// sarama's Consumer (ConsumePartition: no group), and lists each partition's batches with
// their codec through a low-level Fetch made with sarama's own request types.
func consumeAll(client sarama.Client, topic string) (obj, error) {
	parts, err := client.Partitions(topic)
	if err != nil {
		return nil, err
	}
	consumer, err := sarama.NewConsumerFromClient(client)
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	result := obj{}
	for _, p := range parts {
		hwm, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			return nil, fmt.Errorf("latest offset of partition %d: %v", p, err)
		}
		records := []obj{}
		if hwm > 0 {
			pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
			if err != nil {
				return nil, fmt.Errorf("consume partition %d: %v", p, err)
			}
			timeout := time.After(20 * time.Second)
		loop:
			for {
				select {
				case m := <-pc.Messages():
					hs := [][]interface{}{}
					for _, h := range m.Headers {
						hs = append(hs, []interface{}{string(h.Key), hexOrNil(h.Value)})
					}
					records = append(records, obj{
						"offset": m.Offset, "key": hexOrNil(m.Key), "value": hexOrNil(m.Value),
						"headers": hs, "timestamp": millis(m.Timestamp),
					})
					if m.Offset >= hwm-1 {
						break loop
					}
				case e := <-pc.Errors():
					pc.Close()
					return nil, fmt.Errorf("consuming partition %d: %v", p, e)
				case <-timeout:
					break loop
				}
			}
			pc.Close()
		}
		batches, err := batchesOf(client, topic, p, hwm)
		if err != nil {
			return nil, err
		}
		result[fmt.Sprint(p)] = obj{"highWatermark": hwm, "records": records, "batches": batches}
	}
	return obj{"partitions": result}, nil
}

func batchesOf(client sarama.Client, topic string, p int32, hwm int64) ([]obj, error) {
	batches := []obj{}
	broker, err := client.Leader(topic, p)
	if err != nil {
		return nil, err
	}
	offset := int64(0)
	for round := 0; round < 50 && offset < hwm; round++ {
		req := &sarama.FetchRequest{Version: 4, MaxWaitTime: 100, MinBytes: 1, MaxBytes: 10 << 20}
		req.AddBlock(topic, p, offset, 10<<20)
		resp, err := broker.Fetch(req)
		if err != nil {
			return nil, fmt.Errorf("low-level fetch of partition %d: %v", p, err)
		}
		block := resp.GetBlock(topic, p)
		if block == nil {
			return nil, fmt.Errorf("low-level fetch of partition %d: no block", p)
		}
		if block.Err != sarama.ErrNoError {
			return nil, fmt.Errorf("low-level fetch of partition %d: %v", p, block.Err)
		}
		progressed := false
		for _, rs := range block.RecordsSet {
			rb := rs.RecordBatch
			if rb == nil || rb.PartialTrailingRecord {
				continue
			}
			last := rb.FirstOffset + int64(rb.LastOffsetDelta)
			if last < offset {
				continue
			}
			batches = append(batches, obj{
				"baseOffset": rb.FirstOffset, "lastOffset": last, "codec": rb.Codec.String(),
				"records": len(rb.Records), "magic": rb.Version,
				"firstTimestamp": millis(rb.FirstTimestamp), "maxTimestamp": millis(rb.MaxTimestamp),
			})
			offset = last + 1
			progressed = true
		}
		if !progressed {
			break
		}
	}
	return batches, nil
}

func describeConfigs(client sarama.Client, resource *sarama.ConfigResource) (obj, error) {
	// sarama 1.22's ClusterAdmin.DescribeConfig sends version 0, which Kafka 4.0 removed
	// (KIP-896); the same request type of sarama at version 1 is what a user can send.
	controller, err := client.Controller()
	if err != nil {
		return nil, err
	}
	resp, err := controller.DescribeConfigs(&sarama.DescribeConfigsRequest{
		Version: 1, IncludeSynonyms: true, Resources: []*sarama.ConfigResource{resource},
	})
	if err != nil {
		return nil, err
	}
	resources := []obj{}
	for _, r := range resp.Resources {
		entries := obj{}
		for _, e := range r.Configs {
			syn := []obj{}
			for _, s := range e.Synonyms {
				syn = append(syn, obj{"name": s.ConfigName, "value": s.ConfigValue, "source": int(s.Source)})
			}
			entries[e.Name] = obj{"value": e.Value, "readOnly": e.ReadOnly, "default": e.Default,
				"source": int(e.Source), "sensitive": e.Sensitive, "synonyms": syn}
		}
		resources = append(resources, obj{"errorCode": r.ErrorCode, "errorMsg": r.ErrorMsg,
			"type": int(r.Type), "name": r.Name, "configs": entries})
	}
	return obj{"resources": resources}, nil
}

func step(out obj, name string, f func() (interface{}, error)) {
	v, err := f()
	if err != nil {
		out[name] = errObj(err)
	} else {
		out[name] = v
	}
}

func scenario(bootstrap, topic string) obj {
	out := obj{"topic": topic, "partitions": partitions, "codecs": codecNames, "created_configs": createConfigs}
	cfg := newConfig()
	client, err := sarama.NewClient([]string{bootstrap}, cfg)
	if err != nil {
		out["client"] = errObj(err)
		return out
	}
	defer client.Close()
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, cfg)
	if err != nil {
		out["admin"] = errObj(err)
		return out
	}
	defer admin.Close()

	step(out, "create", func() (interface{}, error) {
		entries := map[string]*string{}
		for k, v := range createConfigs {
			v := v
			entries[k] = &v
		}
		err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: entries}, false)
		if err != nil {
			return nil, err
		}
		return obj{"ok": true}, nil
	})
	step(out, "create_again", func() (interface{}, error) {
		err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
		if err == nil {
			return obj{"ok": true}, nil
		}
		if te, ok := err.(*sarama.TopicError); ok {
			return obj{"topic_error": int(te.Err), "message": te.Error()}, nil
		}
		return nil, err
	})
	step(out, "metadata", func() (interface{}, error) {
		md, err := admin.DescribeTopics([]string{topic})
		if err != nil {
			return nil, err
		}
		res := []obj{}
		for _, t := range md {
			ps := []obj{}
			for _, p := range t.Partitions {
				ps = append(ps, obj{"id": p.ID, "leader": p.Leader, "replicas": p.Replicas, "isr": p.Isr, "err": int(p.Err)})
			}
			res = append(res, obj{"name": t.Name, "err": int(t.Err), "partitions": ps})
		}
		return res, nil
	})
	step(out, "topics_after_create", func() (interface{}, error) {
		if err := client.RefreshMetadata(); err != nil {
			return nil, err
		}
		return client.Topics()
	})

	step(out, "produce", func() (interface{}, error) { return produceAll(bootstrap, topic), nil })
	step(out, "consume", func() (interface{}, error) { return consumeAll(client, topic) })

	step(out, "offsets", func() (interface{}, error) {
		res := obj{}
		for p := int32(0); p < partitions; p++ {
			earliest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
			if err != nil {
				return nil, err
			}
			latest, err := client.GetOffset(topic, p, sarama.OffsetNewest)
			if err != nil {
				return nil, err
			}
			res[fmt.Sprint(p)] = obj{"earliest": earliest, "latest": latest}
		}
		return res, nil
	})
	step(out, "offsets_by_timestamp", func() (interface{}, error) {
		stamps := []int64{0}
		if pr, ok := out["produce"].(obj); ok {
			for _, r := range pr["produced"].([]obj) {
				stamps = append(stamps, r["timestamp"].(int64))
			}
		}
		stamps = append(stamps, millis(time.Now())+3600*1000)
		answers := []obj{}
		for _, ts := range stamps {
			per := obj{}
			for p := int32(0); p < partitions; p++ {
				off, err := client.GetOffset(topic, p, ts)
				if err != nil {
					per[fmt.Sprint(p)] = errObj(err)
				} else {
					per[fmt.Sprint(p)] = off
				}
			}
			answers = append(answers, obj{"timestamp": ts, "partitions": per})
		}
		return answers, nil
	})
	step(out, "describe_configs", func() (interface{}, error) {
		all, err := describeConfigs(client, &sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
		if err != nil {
			return nil, err
		}
		some, err := describeConfigs(client, &sarama.ConfigResource{Type: sarama.TopicResource, Name: topic,
			ConfigNames: []string{"retention.ms", "cleanup.policy", "max.message.bytes"}})
		if err != nil {
			return nil, err
		}
		missing, err := describeConfigs(client, &sarama.ConfigResource{Type: sarama.TopicResource, Name: topic + "-does-not-exist"})
		if err != nil {
			return nil, err
		}
		return obj{"all": all["resources"], "some": some["resources"], "missing": missing["resources"]}, nil
	})

	step(out, "delete", func() (interface{}, error) {
		if err := admin.DeleteTopic(topic); err != nil {
			return nil, err
		}
		// Deletion may take effect asynchronously, as in Kafka: poll (bounded).
		deadline := time.Now().Add(10 * time.Second)
		for {
			if err := client.RefreshMetadata(); err != nil {
				return nil, err
			}
			topics, err := client.Topics()
			if err != nil {
				return nil, err
			}
			gone := true
			for _, t := range topics {
				if t == topic {
					gone = false
				}
			}
			if gone || time.Now().After(deadline) {
				return obj{"topics_after": topics}, nil
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	step(out, "metadata_after_delete", func() (interface{}, error) {
		md, err := admin.DescribeTopics([]string{topic})
		if err != nil {
			return nil, err
		}
		res := []obj{}
		for _, t := range md {
			res = append(res, obj{"name": t.Name, "err": int(t.Err), "partitions": len(t.Partitions)})
		}
		return res, nil
	})
	return out
}

// createTopic creates TOPIC as the scenario does (for the tests that cross clients).
func createTopic(bootstrap, topic string) (interface{}, error) {
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, newConfig())
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	entries := map[string]*string{}
	for k, v := range createConfigs {
		v := v
		entries[k] = &v
	}
	if err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1, ConfigEntries: entries}, false); err != nil {
		return nil, err
	}
	return obj{"ok": true}, nil
}

// adminV0 runs the two ClusterAdmin calls of sarama 1.22 that send DescribeConfigs v0.
func adminV0(bootstrap, topic string) obj {
	out := obj{}
	step(out, "describe_config", func() (interface{}, error) {
		admin, err := sarama.NewClusterAdmin([]string{bootstrap}, newConfig())
		if err != nil {
			return nil, err
		}
		defer admin.Close()
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
		if err != nil {
			return nil, err
		}
		res := obj{}
		for _, e := range entries {
			res[e.Name] = obj{"value": e.Value, "default": e.Default}
		}
		return res, nil
	})
	step(out, "list_topics", func() (interface{}, error) {
		admin, err := sarama.NewClusterAdmin([]string{bootstrap}, newConfig())
		if err != nil {
			return nil, err
		}
		defer admin.Close()
		topics, err := admin.ListTopics()
		if err != nil {
			return nil, err
		}
		res := obj{}
		for name, d := range topics {
			cfg := obj{}
			for k, v := range d.ConfigEntries {
				if v != nil {
					cfg[k] = *v
				}
			}
			res[name] = obj{"partitions": d.NumPartitions, "configs": cfg}
		}
		return res, nil
	})
	return out
}

func main() {
	if len(os.Args) < 4 || (len(os.Args) != 4 && !strings.HasPrefix(os.Args[2], "group-")) {
		fmt.Fprintln(os.Stderr, "usage: saramacompat BOOTSTRAP scenario|create|produce|consume|admin-v0 TOPIC")
		fmt.Fprintln(os.Stderr, "       saramacompat BOOTSTRAP group-member|group-admin TOPIC GROUP ...")
		os.Exit(2)
	}
	bootstrap, mode, topic := os.Args[1], os.Args[2], os.Args[3]
	if os.Getenv("SARAMA_DEBUG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags|log.Lmicroseconds)
	} else {
		sarama.Logger = log.New(ioutil.Discard, "", 0)
	}
	// Bounded in time whatever happens (a group member runs until told to stop).
	limit := 55 * time.Second
	if mode == "group-member" {
		limit = 170 * time.Second
	}
	time.AfterFunc(limit, func() {
		fmt.Fprintf(os.Stderr, "saramacompat: timed out after %v\n", limit)
		os.Exit(3)
	})

	var out obj
	switch mode {
	case "group-member":
		os.Exit(groupMember(bootstrap, topic, os.Args[4:]))
	case "group-admin":
		out = groupAdmin(bootstrap, topic, os.Args[4:])
	case "scenario":
		out = scenario(bootstrap, topic)
	case "produce":
		out = produceAll(bootstrap, topic)
	case "consume":
		client, err := sarama.NewClient([]string{bootstrap}, newConfig())
		if err != nil {
			out = errObj(err)
			break
		}
		res, err := consumeAll(client, topic)
		if err != nil {
			out = errObj(err)
		} else {
			out = res
		}
		client.Close()
	case "create":
		out = obj{}
		step(out, "create", func() (interface{}, error) { return createTopic(bootstrap, topic) })
	case "admin-v0":
		out = adminV0(bootstrap, topic)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", mode)
		os.Exit(2)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "encoding result:", err)
		os.Exit(1)
	}
}
