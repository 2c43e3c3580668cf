// A callboard agent written in Go with nats.go's micro package: the "Write an agent in
// Go" example of the README, and the agent of tests/system/test_go_interop.py.
//
// It serves one capability, wordcount ({"text": "..."} -> {"words": N}), on
// <prefix>.task.wordcount in callboard's queue group, so that callboard's orchestrator,
// `callboard ask`, `callboard agents`, pipelines and `nats req` use it like a Python agent.
//
// What callboard needs of an agent, and where this program does it:
//   - the endpoint: subject <prefix>.task.<capability>, queue group "callboard"    (main)
//   - $SRV discovery with metadata agent_id and prefix, endpoint metadata
//     description, keywords and input_schema (routing, `callboard agents`)          (main)
//   - reply headers Agent-Task-Id and Agent-Id; errors as Nats-Service-Error(-Code)
//     headers plus a {"error": {...}} body                                          (reply)
//   - status events online / heartbeat / offline on <prefix>.status.<id>.<state>
//     (the orchestrator's live registry), accepted / completed / failed per task   (status)
//   - its direct address <prefix>.agent.<id>: Agent-Op task (with Agent-Capability;
//     `ask` and pipelines send to one agent) and ping (`callboard agents`)          (direct)
//
// Usage: agent NATS_URL PREFIX AGENT_ID
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

const (
	queueGroup   = "callboard" // every replica of a capability shares it
	capability   = "wordcount"
	kind         = "wordcount" // the micro service name: ^[A-Za-z0-9_-]+$
	heartbeat    = 5 * time.Second
	maxInFlight  = 1 // nats.go runs a subscription's handler one message at a time
	inputSchema  = `{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`
	outputSchema = `{"type":"object","properties":{"words":{"type":"integer"}},"required":["words"]}`
)

type agent struct {
	nc       *nats.Conn
	prefix   string
	id       string
	inFlight atomic.Int64
}

// status publishes one status event on <prefix>.status.<id>.<state>.
func (a *agent) status(state string, fields map[string]any) {
	event := map[string]any{"v": 1, "agent": a.id, "state": state, "ts": nowSeconds()}
	for k, v := range fields {
		event[k] = v
	}
	body, _ := json.Marshal(event)
	_ = a.nc.Publish(fmt.Sprintf("%s.status.%s.%s", a.prefix, a.id, state), body)
}

func (a *agent) lifecycle(state string) {
	a.status(state, map[string]any{
		"capabilities":    []string{capability},
		"max_concurrency": maxInFlight,
		"in_flight":       a.inFlight.Load(),
		"interval":        heartbeat.Seconds(),
		"service":         kind,
	})
}

// outcome is what one task comes to: a result, or an error with its code.
type outcome struct {
	result any
	code   int
	kind   string
	err    string
}

// run does one task: {"text": "..."} -> {"words": N}, with status events around it.
func (a *agent) run(headers nats.Header, data []byte) (string, outcome) {
	a.inFlight.Add(1)
	defer a.inFlight.Add(-1)
	started := time.Now()
	taskID := headers.Get("Agent-Task-Id")
	if taskID == "" {
		taskID = fmt.Sprintf("%s-%d", a.id, started.UnixNano())
	}
	sender := headers.Get("Agent-Sender")
	if sender == "" {
		sender = "anonymous"
	}
	task := map[string]any{"task_id": taskID, "capability": capability, "sender": sender}
	a.status("accepted", task)
	out := count(headers, data)
	task["elapsed_ms"] = elapsedMs(started)
	if out.code != 0 {
		task["error"] = map[string]any{"code": out.code, "type": out.kind, "message": out.err}
		a.status("failed", task)
	} else {
		a.status("completed", task)
	}
	return taskID, out
}

func count(headers nats.Header, data []byte) outcome {
	if deadline, err := strconv.ParseInt(headers.Get("Agent-Deadline"), 10, 64); err == nil &&
		time.Now().UnixMilli() > deadline {
		return outcome{code: 408, kind: "timeout", err: "the task's deadline passed before it started"}
	}
	var input struct {
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(data, &input); err != nil || input.Text == nil {
		return outcome{code: 400, kind: "bad_input", err: `expected {"text": "..."}`}
	}
	return outcome{result: map[string]int{"words": len(strings.Fields(*input.Text))}}
}

// reply is the task's answer as a NATS message: the result, or the error convention.
func (a *agent) reply(subject, taskID string, out outcome) *nats.Msg {
	msg := nats.NewMsg(subject)
	msg.Header.Set("Agent-Task-Id", taskID)
	msg.Header.Set("Agent-Id", a.id)
	if out.code == 0 {
		msg.Data, _ = json.Marshal(out.result)
		return msg
	}
	msg.Header.Set("Nats-Service-Error", out.err)
	msg.Header.Set("Nats-Service-Error-Code", strconv.Itoa(out.code))
	msg.Data, _ = json.Marshal(map[string]any{
		"error": map[string]any{"code": out.code, "type": out.kind, "message": out.err}})
	return msg
}

// handle serves <prefix>.task.wordcount (the micro endpoint, counted in $SRV.STATS).
func (a *agent) handle(req micro.Request) {
	taskID, out := a.run(nats.Header(req.Headers()), req.Data())
	msg := a.reply("", taskID, out)
	headers := micro.WithHeaders(micro.Headers(msg.Header))
	if out.code == 0 {
		_ = req.Respond(msg.Data, headers)
		return
	}
	_ = req.Error(strconv.Itoa(out.code), out.err, msg.Data, headers)
}

// direct serves <prefix>.agent.<id>: a targeted task (the orchestrator routes `ask` and
// pipeline steps to one agent this way) or a ping with the current load.
func (a *agent) direct(msg *nats.Msg) {
	switch msg.Header.Get("Agent-Op") {
	case "", "task":
		if msg.Header.Get("Agent-Capability") != capability {
			_ = msg.RespondMsg(a.reply(msg.Reply, msg.Header.Get("Agent-Task-Id"), outcome{
				code: 404, kind: "unknown_capability", err: "this agent serves " + capability}))
			return
		}
		taskID, out := a.run(msg.Header, msg.Data)
		_ = msg.RespondMsg(a.reply(msg.Reply, taskID, out))
	case "ping":
		body, _ := json.Marshal(map[string]any{"agent": a.id, "in_flight": a.inFlight.Load()})
		_ = msg.Respond(body)
	default: // "cancel": a word count is over before a cancel could reach it
		_ = msg.RespondMsg(a.reply(msg.Reply, msg.Header.Get("Agent-Task-Id"), outcome{
			code: 400, kind: "bad_input", err: "unsupported Agent-Op"}))
	}
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: agent NATS_URL PREFIX AGENT_ID")
		os.Exit(2)
	}
	url, prefix, id := os.Args[1], os.Args[2], os.Args[3]
	closed := make(chan struct{})
	nc, err := nats.Connect(url, nats.Name("callboard-go-agent "+id),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(5)
	}
	a := &agent{nc: nc, prefix: prefix, id: id}

	svc, err := micro.AddService(nc, micro.Config{
		Name:        kind,
		Version:     "1.0.0",
		Description: "Counts the words of a text (a Go agent)",
		Metadata: map[string]string{
			"agent_id":        id, // callboard names the agent by this, not by the service id
			"prefix":          prefix,
			"protocol":        "1",
			"capabilities":    capability,
			"max_concurrency": strconv.Itoa(maxInFlight),
			"framework":       "nats.go",
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		os.Exit(1)
	}
	err = svc.AddEndpoint(capability, micro.HandlerFunc(a.handle),
		micro.WithEndpointSubject(prefix+".task."+capability),
		micro.WithEndpointQueueGroup(queueGroup),
		micro.WithEndpointMetadata(map[string]string{
			"description":   "Count the words of a text",
			"keywords":      "count,words,wordcount",
			"input_schema":  inputSchema,
			"output_schema": outputSchema,
		}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "endpoint:", err)
		os.Exit(1)
	}
	if _, err := nc.Subscribe(prefix+".agent."+id, a.direct); err != nil {
		fmt.Fprintln(os.Stderr, "direct subject:", err)
		os.Exit(1)
	}
	if err := nc.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "flush:", err)
		os.Exit(1)
	}
	a.lifecycle("online")
	fmt.Fprintf(os.Stderr, "go agent %s ready: service id %s\n", id, svc.Info().ID)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	ticker := time.NewTicker(heartbeat)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			a.lifecycle("heartbeat")
		case <-stop:
			_ = svc.Stop()
			a.status("offline", map[string]any{"reason": "shutdown"})
			_ = nc.Drain() // delivers what is in flight, then closes
			<-closed
			return
		}
	}
}

func nowSeconds() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func elapsedMs(since time.Time) float64 {
	return float64(time.Since(since).Microseconds()) / 1000
}
