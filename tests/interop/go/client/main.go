// A callboard client written with nats.go: tasks with the protocol's headers, the status
// stream, and discovery with nats.go's micro types. tests/system/test_go_interop.py runs it
// against a real daemon and checks what it prints (one JSON object on stdout).
//
// Usage: client NATS_URL PREFIX
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

type reply struct {
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body"`
	Error   string            `json:"error,omitempty"`
}

type event struct {
	Subject string          `json:"subject"`
	Body    json.RawMessage `json:"body"`
}

type output struct {
	Prefix       string          `json:"prefix"`
	OK           reply           `json:"ok"`
	BadInput     reply           `json:"bad_input"`
	Expired      reply           `json:"expired"`
	Cycle        reply           `json:"cycle"`
	NoResponders bool            `json:"no_responders"`
	Events       []event         `json:"events"`
	Ping         []micro.Ping    `json:"ping"`
	Info         []micro.Info    `json:"info"`
	Stats        []micro.Stats   `json:"stats"`
	InfoByID     *micro.Info     `json:"info_by_id"`
	Sent         json.RawMessage `json:"sent"`
}

func must(err error, what string) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
}

// request sends one task with headers and returns the reply as data.
func request(nc *nats.Conn, subject string, body string, headers nats.Header) (reply, error) {
	msg := nats.NewMsg(subject)
	msg.Header = headers
	msg.Data = []byte(body)
	resp, err := nc.RequestMsg(msg, 10*time.Second)
	if err != nil {
		return reply{Error: err.Error()}, err
	}
	out := reply{Headers: map[string]string{}, Body: resp.Data}
	for k := range resp.Header {
		out.Headers[k] = resp.Header.Get(k)
	}
	if !json.Valid(resp.Data) {
		out.Body, _ = json.Marshal(string(resp.Data))
	}
	return out, nil
}

// gather publishes one $SRV request and decodes every reply that arrives within wait.
func gather[T any](nc *nats.Conn, subject string, wait time.Duration) []T {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	must(err, "subscribe "+inbox)
	defer sub.Unsubscribe()
	must(nc.PublishRequest(subject, inbox, nil), "publish "+subject)
	var found []T
	deadline := time.Now().Add(wait)
	for {
		msg, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return found
		}
		var item T
		must(json.Unmarshal(msg.Data, &item), "decode reply on "+subject)
		found = append(found, item)
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: client NATS_URL PREFIX")
		os.Exit(2)
	}
	url, prefix := os.Args[1], os.Args[2]
	nc, err := nats.Connect(url, nats.Name("callboard-go-client"))
	must(err, "connect")
	defer nc.Close()

	out := output{Prefix: prefix}
	statusSub, err := nc.SubscribeSync(prefix + ".status.>")
	must(err, "subscribe status")
	must(nc.Flush(), "flush")

	task := prefix + ".task.math"
	taskID := fmt.Sprintf("go-ok-%d", time.Now().UnixNano())
	sent := nats.Header{}
	sent.Set("Agent-Task-Id", taskID)
	sent.Set("Agent-Sender", "go-client")
	sent.Set("Agent-Deadline", strconv.FormatInt(time.Now().Add(10*time.Second).UnixMilli(), 10))
	sent.Set("Agent-Seq", "7")
	sent.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	out.Sent, _ = json.Marshal(sent)
	out.OK, err = request(nc, task, `{"expression": "6*7"}`, sent)
	must(err, "ok task")

	out.BadInput, err = request(nc, task, `{"expression": "6*"}`,
		nats.Header{"Agent-Task-Id": {"go-bad-" + taskID}})
	must(err, "bad input task")

	past := strconv.FormatInt(time.Now().Add(-time.Minute).UnixMilli(), 10)
	out.Expired, err = request(nc, task, `{"expression": "1+1"}`,
		nats.Header{"Agent-Task-Id": {"go-late-" + taskID}, "Agent-Deadline": {past}})
	must(err, "expired task")

	// The math agent named in the chain already handled this task: a delegation cycle.
	mathIDs := map[string]bool{}
	for _, info := range gather[micro.Info](nc, "$SRV.INFO.math", 500*time.Millisecond) {
		if info.Metadata["prefix"] == prefix {
			mathIDs[info.Metadata["agent_id"]] = true
		}
	}
	chain := ""
	for id := range mathIDs {
		chain = id
	}
	out.Cycle, err = request(nc, task, `{"expression": "1+1"}`,
		nats.Header{"Agent-Task-Id": {"go-cycle-" + taskID}, "Agent-Chain": {"someone," + chain}})
	must(err, "cycle task")

	_, err = request(nc, prefix+".task.nosuch", `{}`, nil)
	out.NoResponders = errors.Is(err, nats.ErrNoResponders)

	// The status events of the first task, up to its completion.
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg, err := statusSub.NextMsg(time.Until(deadline))
		must(err, "waiting for the completed event of "+taskID)
		var body struct {
			TaskID string `json:"task_id"`
			State  string `json:"state"`
		}
		if json.Unmarshal(msg.Data, &body) != nil || body.TaskID != taskID {
			continue
		}
		out.Events = append(out.Events, event{Subject: msg.Subject, Body: msg.Data})
		if body.State == "completed" {
			break
		}
	}

	// Discovery with nats.go's micro types and subjects.
	wait := 500 * time.Millisecond
	subject := func(verb micro.Verb, name, id string) string {
		s, err := micro.ControlSubject(verb, name, id)
		must(err, "control subject")
		return s
	}
	out.Ping = gather[micro.Ping](nc, subject(micro.PingVerb, "", ""), wait)
	out.Info = gather[micro.Info](nc, subject(micro.InfoVerb, "", ""), wait)
	out.Stats = gather[micro.Stats](nc, subject(micro.StatsVerb, "math", ""), wait)
	for _, ping := range out.Ping {
		if ping.Name == "math" && mathIDs[ping.Metadata["agent_id"]] {
			infos := gather[micro.Info](nc, subject(micro.InfoVerb, "math", ping.ID), wait)
			if len(infos) == 1 {
				out.InfoByID = &infos[0]
			}
		}
	}

	encoded, err := json.Marshal(out)
	must(err, "encode output")
	fmt.Println(string(encoded))
}
