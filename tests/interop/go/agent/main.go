// A callboard agent written in Go with nats.go's micro package: the "Write an agent in
// Go" example of the README, and the agent of tests/system/test_go_interop.py.
//
// It serves one capability, wordcount ({"text": "..."} -> {"words": N}), on
// <prefix>.task.wordcount in callboard's queue group, so that callboard's orchestrator,
// `callboard ask`, `callboard agents`, pipelines and `nats req` use it like a Python agent.
// It speaks wire protocol v1 revision 2 (see the README's version note).
//
// What callboard needs of an agent, and where this program does it:
//   - the endpoint: subject <prefix>.task.<capability>, queue group "callboard"    (main)
//   - $SRV discovery with metadata agent_id and prefix, endpoint metadata
//     description, keywords and input_schema (`callboard agents`)                  (main)
//   - reply headers Agent-Task-Id and Agent-Id; errors as Nats-Service-Error(-Code)
//     headers plus a {"error": {...}} body                                          (reply)
//   - answers only to inbox reply subjects (_INBOX...): any other reply subject
//     would make it publish there with its own permissions                          (answerable)
//   - status events online / heartbeat / offline on <prefix>.status.<id>.<state>
//     (the orchestrator's live registry), accepted / completed / failed per task   (status)
//   - its capability address <prefix>.agent.<capability>.<id>: targeted tasks
//     (`ask` and pipelines send to one agent) and a ping answered with its load, the
//     capability's keywords and input schema; that answer is what makes the live
//     registry believe the capability and route to it                               (capabilityAddress)
//   - its control address <prefix>.agent.<id>: ping (`callboard agents`); a task
//     sent there gets a 400 naming the capability address; a cancel is refused,
//     since a word count ends before a cancel could reach it                        (control)
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
	"sync"
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
	maxInFlight  = 1 // run holds agent.busy: one task at a time, from either subject
	keywords     = "count,words,wordcount"
	inputSchema  = `{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}`
	outputSchema = `{"type":"object","properties":{"words":{"type":"integer"}},"required":["words"]}`
)

type agent struct {
	nc       *nats.Conn
	prefix   string
	id       string
	busy     sync.Mutex // tasks come on two subscriptions, each with its own goroutine
	inFlight atomic.Int64
	refused  atomic.Int64 // requests dropped for a reply subject that is not an inbox
}

// answerable says whether a request's reply subject may be answered: none, or an inbox
// (first token starting with _INBOX, no wildcard or space). A caller that names, say,
// <prefix>.status.<id>.offline as its reply would otherwise make this agent publish a
// forged event there. Others are dropped unanswered, counted, and the first one logged.
func (a *agent) answerable(reply string) bool {
	if reply == "" || (strings.HasPrefix(reply, "_INBOX") && !strings.ContainsAny(reply, "*> \t")) {
		return true
	}
	if a.refused.Add(1) == 1 {
		fmt.Fprintf(os.Stderr, "go agent %s dropped a request whose reply subject %.120q is not "+
			"an inbox; later ones are only counted\n", a.id, reply)
	}
	return false
}

// load is the agent's current load, as a ping on either direct address answers it.
func (a *agent) load() map[string]any {
	return map[string]any{
		"agent":           a.id,
		"capabilities":    []string{capability},
		"in_flight":       a.inFlight.Load(),
		"max_concurrency": maxInFlight,
	}
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
	a.busy.Lock()
	defer a.busy.Unlock()
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
	if !a.answerable(req.Reply()) {
		return
	}
	taskID, out := a.run(nats.Header(req.Headers()), req.Data())
	msg := a.reply("", taskID, out)
	headers := micro.WithHeaders(micro.Headers(msg.Header))
	if out.code == 0 {
		_ = req.Respond(msg.Data, headers)
		return
	}
	_ = req.Error(strconv.Itoa(out.code), out.err, msg.Data, headers)
}

// respond publishes the answer to a request of a direct address, if it asked for one.
func (a *agent) respond(request *nats.Msg, answer *nats.Msg) {
	if request.Reply != "" {
		_ = a.nc.PublishMsg(answer)
	}
}

// answerJSON answers a request of a direct address with a JSON body.
func (a *agent) answerJSON(request *nats.Msg, value any) {
	answer := nats.NewMsg(request.Reply)
	answer.Data, _ = json.Marshal(value)
	a.respond(request, answer)
}

// capabilityAddress serves <prefix>.agent.wordcount.<id>: the capability is the
// subject's, which the server's subscribe permissions bind to the users allowed to
// serve it. A task here is one the router sent to this agent (`ask`, pipeline steps,
// dispatch with agent_id). A ping is the registry's proof of the capability: it answers
// the load with the capability's keywords and input schema, as Python agents do.
func (a *agent) capabilityAddress(msg *nats.Msg) {
	if !a.answerable(msg.Reply) {
		return
	}
	switch msg.Header.Get("Agent-Op") {
	case "ping":
		answer := a.load()
		answer["capability"] = capability
		answer["keywords"] = strings.Split(keywords, ",")
		answer["input_schema"] = json.RawMessage(inputSchema)
		a.answerJSON(msg, answer)
	case "", "task":
		taskID, out := a.run(msg.Header, msg.Data)
		a.respond(msg, a.reply(msg.Reply, taskID, out))
	default:
		a.respond(msg, a.reply(msg.Reply, msg.Header.Get("Agent-Task-Id"), outcome{
			code: 400, kind: "bad_input", err: "unknown Agent-Op: use task or ping"}))
	}
}

// control serves <prefix>.agent.<id>, the control address: a ping with the current load
// (`callboard agents`). Tasks moved to the capability address in revision 2: one sent
// here gets a 400 that names it. Cancels are refused, and this agent does not listen
// on <prefix>.cancel: a word count is over long before a cancel could reach it.
func (a *agent) control(msg *nats.Msg) {
	if !a.answerable(msg.Reply) {
		return
	}
	taskID := msg.Header.Get("Agent-Task-Id")
	switch msg.Header.Get("Agent-Op") {
	case "ping":
		a.answerJSON(msg, a.load())
	case "cancel":
		a.answerJSON(msg, map[string]any{
			"cancelled": false,
			"error":     "agent " + a.id + " cannot cancel a task: a word count ends before a cancel could reach it",
		})
	case "", "task":
		if msg.Header.Get("Agent-Capability") != capability {
			a.respond(msg, a.reply(msg.Reply, taskID, outcome{
				code: 404, kind: "unknown_capability", err: "agent " + a.id + " serves " + capability}))
			return
		}
		a.respond(msg, a.reply(msg.Reply, taskID, outcome{code: 400, kind: "bad_input", err: fmt.Sprintf(
			"direct tasks for agent %s go to %s (callboard wire protocol v1 revision 2): the "+
				"capability is in the subject, so that the server can check who may serve it; "+
				"upgrade the client or send to the capability's subject", a.id, a.capabilitySubject())}))
	default:
		a.respond(msg, a.reply(msg.Reply, taskID, outcome{
			code: 400, kind: "bad_input", err: "unknown Agent-Op: use ping or cancel"}))
	}
}

func (a *agent) capabilitySubject() string {
	return a.prefix + ".agent." + capability + "." + a.id
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
			"keywords":      keywords,
			"input_schema":  inputSchema,
			"output_schema": outputSchema,
		}))
	if err != nil {
		fmt.Fprintln(os.Stderr, "endpoint:", err)
		os.Exit(1)
	}
	if _, err := nc.Subscribe(a.capabilitySubject(), a.capabilityAddress); err != nil {
		fmt.Fprintln(os.Stderr, "capability address:", err)
		os.Exit(1)
	}
	if _, err := nc.Subscribe(prefix+".agent."+id, a.control); err != nil {
		fmt.Fprintln(os.Stderr, "control address:", err)
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
