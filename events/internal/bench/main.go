// Command bench measures the events SDK against raw nats.go JetStream doing the same work, in
// the same run, on the same embedded nats-server: P publishers each encoding a CloudEvent and
// publishing it with a message id, waiting for the stream's ack, and one durable pull consumer
// decoding C events at a time and acking each. The raw side encodes and decodes the same JSON
// envelope by hand with encoding/json; the SDK side uses NewEvent, Publisher and Subscriber, which
// also validate every event against the catalog and run the middleware (logging, metrics,
// timeout, recover, heartbeats). Rounds alternate raw and SDK; the table shows each
// side's median round (by throughput), and the process CPU each event cost, server included.
// Run by `make bench`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/troupe-dev/troupe/events"
	"github.com/troupe-dev/troupe/events/embedded"
)

type config struct {
	n, publishers, concurrency, rounds int
	only                               string
}

type result struct {
	throughput  float64 // events per second, publish start to last handled
	p50, p99    time.Duration
	cpuPerEvent time.Duration // process CPU (server, publishers and consumer together) per event
}

func main() {
	var c config
	flag.IntVar(&c.n, "n", 20000, "events per round")
	flag.IntVar(&c.publishers, "publishers", 4, "concurrent publishers")
	flag.IntVar(&c.concurrency, "concurrency", 4, "events handled at once")
	flag.IntVar(&c.rounds, "rounds", 7, "rounds per side")
	flag.StringVar(&c.only, "only", "", "profile one side alone: raw or sdk")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the SDK rounds here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	dev, err := embedded.StartDev(ctx, "")
	if err != nil {
		return err
	}
	defer dev.Close()
	js := dev.JS

	var raw, sdk []result
	for i := range c.rounds {
		fmt.Fprintf(os.Stderr, "round %d/%d\n", i+1, c.rounds)
		if c.only == "raw" {
			if _, err := roundRaw(ctx, js, c, i); err != nil {
				return err
			}
			continue
		}
		if c.only == "sdk" {
			_, err := roundSDK(ctx, js, c, i)
			if err != nil {
				return err
			}
			continue
		}
		c0 := cpuTime()
		r, err := roundRaw(ctx, js, c, i)
		if err != nil {
			return fmt.Errorf("raw: %w", err)
		}
		r.cpuPerEvent = (cpuTime() - c0) / time.Duration(c.n)
		raw = append(raw, r)
		c0 = cpuTime()
		s, err := roundSDK(ctx, js, c, i)
		if err != nil {
			return fmt.Errorf("sdk: %w", err)
		}
		s.cpuPerEvent = (cpuTime() - c0) / time.Duration(c.n)
		sdk = append(sdk, s)
	}
	r, s := median(raw), median(sdk)
	fmt.Printf("Events SDK vs raw nats.go JetStream: %d events per round, %d publishers (sync, with msg id), %d handled at once, median of %d rounds, embedded nats-server, file storage\n\n",
		c.n, c.publishers, c.concurrency, c.rounds)
	fmt.Println("| path | throughput (events/s) | p50 latency | p99 latency | CPU per event |")
	fmt.Println("|---|---:|---:|---:|---:|")
	fmt.Printf("| raw nats.go JetStream | %.0f | %s | %s | %s |\n", r.throughput, ms(r.p50), ms(r.p99), us(r.cpuPerEvent))
	fmt.Printf("| troupe events SDK | %.0f | %s | %s | %s |\n", s.throughput, ms(s.p50), ms(s.p99), us(s.cpuPerEvent))
	fmt.Printf("| **SDK / raw** | **%.2f×** | %.2f× | %.2f× | %.2f× |\n", s.throughput/r.throughput,
		float64(s.p50)/float64(r.p50), float64(s.p99)/float64(r.p99), float64(s.cpuPerEvent)/float64(r.cpuPerEvent))
	fmt.Println()
	fmt.Printf("target: SDK throughput ≥ 0.7× raw — %s\n", verdict(s.throughput/r.throughput >= 0.7))
	return nil
}

// envelope is the CloudEvent the raw side writes and reads by hand with encoding/json: the same
// attributes and data as the SDK's events, without the SDK.
type envelope struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	CorrelationID   string          `json:"correlationid"`
	Data            json.RawMessage `json:"data"`
}

type readyData struct {
	TimeToReady string `json:"timeToReady"`
	Objects     int    `json:"objects"`
}

func roundRaw(ctx context.Context, js jetstream.JetStream, c config, round int) (result, error) {
	if err := reset(ctx, js); err != nil {
		return result{}, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
		Durable: "bench-raw", AckPolicy: jetstream.AckExplicitPolicy, FilterSubjects: []string{"troupe.release.*.*.ready"},
		MaxAckPending: 1000,
	})
	if err != nil {
		return result{}, err
	}
	lat := newLatencies(c.n)
	it, err := cons.Messages(jetstream.PullMaxMessages(c.concurrency))
	if err != nil {
		return result{}, err
	}
	defer it.Stop()
	go func() {
		sem := make(chan struct{}, c.concurrency)
		for {
			sem <- struct{}{}
			msg, err := it.Next()
			if err != nil {
				return
			}
			go func() {
				defer func() { <-sem }()
				var env envelope
				var data readyData
				if json.Unmarshal(msg.Data(), &env) != nil || json.Unmarshal(env.Data, &data) != nil {
					_ = msg.Term()
					return
				}
				lat.add(time.Since(env.Time))
				_ = msg.Ack()
			}()
		}
	}()
	start := time.Now()
	err = publishAll(c, func(i int) error {
		name := fmt.Sprintf("app-%d", i%50)
		data, err := json.Marshal(readyData{TimeToReady: "1s", Objects: 3})
		if err != nil {
			return err
		}
		id := fmt.Sprintf("raw-%d-%d", round, i)
		body, err := json.Marshal(envelope{SpecVersion: "1.0", ID: id, Source: "troupe/bench", Type: events.TypeReady,
			Subject: "bench/" + name, Time: time.Now(), DataContentType: "application/json", CorrelationID: id, Data: data})
		if err != nil {
			return err
		}
		msg := nats.NewMsg("troupe.release.bench." + name + ".ready")
		msg.Header.Set("Content-Type", events.ContentTypeStructured)
		msg.Data = body
		_, err = js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
		return err
	})
	if err != nil {
		return result{}, err
	}
	return lat.wait(start)
}

func roundSDK(ctx context.Context, js jetstream.JetStream, c config, round int) (result, error) {
	if err := reset(ctx, js); err != nil {
		return result{}, err
	}
	metrics, err := events.NewMetrics(prometheus.NewRegistry())
	if err != nil {
		return result{}, err
	}
	lat := newLatencies(c.n)
	sub, err := events.NewSubscriber(js, events.SubscriberConfig{
		Service: "bench-sdk", Types: []string{events.TypeReady}, Concurrency: c.concurrency, Metrics: metrics,
	}, func(ctx context.Context, e event.Event) error {
		lat.add(time.Since(e.Time()))
		return nil
	})
	if err != nil {
		return result{}, err
	}
	subCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sub.Start(subCtx) }()
	defer func() { stop(); <-done }()
	select {
	case <-sub.Ready():
	case err := <-done:
		return result{}, fmt.Errorf("subscriber stopped: %v", err)
	}

	pub := events.NewPublisher(js, events.Names{})
	start := time.Now()
	err = publishAll(c, func(i int) error {
		r := events.Release{Namespace: "bench", Name: fmt.Sprintf("app-%d", i%50)}
		e, err := events.NewEvent("troupe/bench", events.TypeReady, r, events.Ready{TimeToReady: events.Duration(time.Second), Objects: 3})
		if err != nil {
			return err
		}
		_, err = pub.Publish(ctx, e)
		return err
	})
	if err != nil {
		return result{}, err
	}
	return lat.wait(start)
}

func publishAll(c config, publish func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, c.publishers)
	for range c.publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= c.n {
					return
				}
				if err := publish(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// reset empties the stream and removes the bench consumers, so each round starts alike.
func reset(ctx context.Context, js jetstream.JetStream) error {
	s, err := js.Stream(ctx, events.StreamName)
	if err != nil {
		return err
	}
	for _, name := range []string{"bench-raw", "bench-sdk"} {
		_ = s.DeleteConsumer(ctx, name)
	}
	return s.Purge(ctx)
}

type latencies struct {
	mu   sync.Mutex
	d    []time.Duration
	n    int
	done chan struct{}
}

func newLatencies(n int) *latencies {
	return &latencies{d: make([]time.Duration, 0, n), n: n, done: make(chan struct{})}
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d = append(l.d, d)
	if len(l.d) == l.n {
		close(l.done)
	}
}

func (l *latencies) wait(start time.Time) (result, error) {
	select {
	case <-l.done:
	case <-time.After(5 * time.Minute):
		return result{}, fmt.Errorf("only %d of %d events handled after 5m", len(l.d), l.n)
	}
	elapsed := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.d)
	return result{
		throughput: float64(l.n) / elapsed.Seconds(),
		p50:        l.d[len(l.d)/2],
		p99:        l.d[len(l.d)*99/100],
	}, nil
}

func median(rs []result) result {
	byT := slices.Clone(rs)
	slices.SortFunc(byT, func(a, b result) int { return int(a.throughput - b.throughput) })
	return byT[len(byT)/2]
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d.Nanoseconds())/1000) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
