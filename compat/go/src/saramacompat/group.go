// Consumer groups with sarama 1.22's ConsumerGroup API, for compat/test_groups_sarama.py.
//
//	saramacompat BOOTSTRAP group-member TOPIC GROUP NAME SESSION_MS
//	    One member of GROUP subscribed to TOPIC (sarama.NewConsumerGroup, Consume in a
//	    loop, MarkMessage after each record; the offset manager commits every 200 ms and
//	    when a session ends). One JSON object per line on stdout:
//	      {"ev":"assigned","partitions":[..],"generation":G,"member":ID}   Setup
//	      {"ev":"revoked","generation":G}                                Cleanup
//	      {"ev":"record","p":P,"o":O,"v":VALUE}                          ConsumeClaim
//	      {"ev":"error","error":...}                                     Errors(), Consume
//	      {"ev":"closed"}                                                after Close
//	    Closing stdin ends the session and closes the group (LeaveGroup), then it exits.
//	saramacompat BOOTSTRAP group-admin TOPIC GROUP STEP[,STEP...]
//	    ClusterAdmin.ListConsumerGroups (list), DescribeConsumerGroups (describe),
//	    ListConsumerGroupOffsets (offsets), and DeleteGroups sent to the coordinator
//	    (delete; sarama 1.22's ClusterAdmin has no DeleteConsumerGroup). One JSON object.
//
// What sarama 1.22 sends for a group, whatever the broker advertises (it does not ask):
// FindCoordinator v0, JoinGroup v1 (config.Version >= 0.10.1), SyncGroup v0, Heartbeat
// v0, LeaveGroup v0, OffsetFetch v1, OffsetCommit v1 (v2 when Consumer.Offsets.Retention
// is set; the tests keep sarama's default), ListGroups v0, DescribeGroups v0, DeleteGroups v0; and
// Metadata v5, Fetch v4 and ListOffsets v1 around them.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/ioutil"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

type lineWriter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (w *lineWriter) emit(o obj) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.enc.Encode(o); err != nil {
		fmt.Fprintln(os.Stderr, "writing an event:", err)
	}
}

func groupConfig(name string, sessionMs int) *sarama.Config {
	c := newConfig()
	c.ClientID = "sarama-" + name
	c.Consumer.Return.Errors = true
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	// Default retention (0): sarama 1.22 then commits with OffsetCommit v1, which Kafka 4.0
	// removed (KIP-896) but Runnel keeps for this client; users rarely change it.
	c.Consumer.Offsets.CommitInterval = 200 * time.Millisecond
	c.Consumer.Group.Session.Timeout = time.Duration(sessionMs) * time.Millisecond
	c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	c.Consumer.Group.Rebalance.Timeout = 20 * time.Second
	c.Consumer.Group.Rebalance.Retry.Max = 20
	c.Consumer.Group.Rebalance.Retry.Backoff = 500 * time.Millisecond
	c.Metadata.Retry.Max = 20
	c.Metadata.Retry.Backoff = 250 * time.Millisecond
	return c
}

type groupHandler struct {
	out   *lineWriter
	topic string
}

func (h *groupHandler) Setup(s sarama.ConsumerGroupSession) error {
	parts := s.Claims()[h.topic]
	if parts == nil {
		parts = []int32{}
	}
	h.out.emit(obj{"ev": "assigned", "partitions": parts, "generation": s.GenerationID(), "member": s.MemberID()})
	return nil
}

func (h *groupHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	h.out.emit(obj{"ev": "revoked", "generation": s.GenerationID()})
	return nil
}

func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		h.out.emit(obj{"ev": "record", "p": msg.Partition, "o": msg.Offset, "v": string(msg.Value)})
		s.MarkMessage(msg, "")
	}
	return nil
}

func groupMember(bootstrap, topic string, args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: saramacompat BOOTSTRAP group-member TOPIC GROUP NAME SESSION_MS")
		return 2
	}
	group, name := args[0], args[1]
	sessionMs, err := strconv.Atoi(args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad SESSION_MS:", err)
		return 2
	}
	out := &lineWriter{enc: json.NewEncoder(os.Stdout)}
	cg, err := sarama.NewConsumerGroup([]string{bootstrap}, group, groupConfig(name, sessionMs))
	if err != nil {
		out.emit(obj{"ev": "error", "error": err.Error(), "where": "new"})
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(ioutil.Discard, os.Stdin)
		cancel()
	}()
	go func() {
		for err := range cg.Errors() {
			out.emit(obj{"ev": "error", "error": err.Error(), "where": "errors"})
		}
	}()
	h := &groupHandler{out: out, topic: topic}
	for ctx.Err() == nil {
		if err := cg.Consume(ctx, []string{topic}, h); err != nil {
			out.emit(obj{"ev": "error", "error": err.Error(), "where": "consume"})
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	if err := cg.Close(); err != nil {
		out.emit(obj{"ev": "error", "error": err.Error(), "where": "close"})
	}
	out.emit(obj{"ev": "closed"})
	return 0
}

func groupAdmin(bootstrap, topic string, args []string) obj {
	out := obj{}
	if len(args) != 2 {
		out["usage"] = errObj(fmt.Errorf("saramacompat BOOTSTRAP group-admin TOPIC GROUP STEP[,STEP...]"))
		return out
	}
	group := args[0]
	cfg := newConfig()
	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, cfg)
	if err != nil {
		out["admin"] = errObj(err)
		return out
	}
	defer admin.Close()
	client, err := sarama.NewClient([]string{bootstrap}, cfg)
	if err != nil {
		out["client"] = errObj(err)
		return out
	}
	defer client.Close()
	for _, s := range strings.Split(args[1], ",") {
		switch s {
		case "list":
			step(out, s, func() (interface{}, error) { return admin.ListConsumerGroups() })
		case "describe":
			step(out, s, func() (interface{}, error) {
				groups, err := admin.DescribeConsumerGroups([]string{group})
				if err != nil {
					return nil, err
				}
				res := []obj{}
				for _, g := range groups {
					members := obj{}
					for id, m := range g.Members {
						desc := obj{"clientId": m.ClientId, "clientHost": m.ClientHost}
						if meta, err := m.GetMemberMetadata(); err != nil {
							desc["metadata"] = errObj(err)
						} else if meta != nil {
							desc["topics"] = meta.Topics
						}
						if a, err := m.GetMemberAssignment(); err != nil {
							desc["assignment"] = errObj(err)
						} else if a != nil {
							desc["assignment"] = a.Topics
						}
						members[id] = desc
					}
					res = append(res, obj{"groupId": g.GroupId, "err": int(g.Err), "state": g.State,
						"protocolType": g.ProtocolType, "protocol": g.Protocol, "members": members})
				}
				return res, nil
			})
		case "offsets":
			step(out, s, func() (interface{}, error) {
				parts, err := client.Partitions(topic)
				if err != nil {
					return nil, err
				}
				resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: parts})
				if err != nil {
					return nil, err
				}
				res := obj{}
				for p, b := range resp.Blocks[topic] {
					res[fmt.Sprint(p)] = obj{"offset": b.Offset, "metadata": b.Metadata, "err": int(b.Err)}
				}
				return obj{"err": int(resp.Err), "partitions": res}, nil
			})
		case "delete":
			step(out, s, func() (interface{}, error) {
				coordinator, err := client.Coordinator(group)
				if err != nil {
					return nil, err
				}
				resp, err := coordinator.DeleteGroups(&sarama.DeleteGroupsRequest{Groups: []string{group}})
				if err != nil {
					return nil, err
				}
				res := obj{}
				for g, e := range resp.GroupErrorCodes {
					res[g] = int(e)
				}
				return res, nil
			})
		default:
			out[s] = errObj(fmt.Errorf("unknown step %q", s))
		}
	}
	return out
}
