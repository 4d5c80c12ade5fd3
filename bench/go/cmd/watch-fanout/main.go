// Command watch-fanout is the WatchOrder fan-out load of `make bench`: many concurrent
// orders.v1.OrderService/WatchOrder streams spread over the orders replicas, then orders
// shipped and delivered one after another, timing each event from just before the RPC that
// causes it until each watcher receives it.
//
// It creates -orders orders (on the first target), opens -watchers streams (round robin over
// the targets, -connections HTTP/2 connections per target, each watcher on one order, at most
// -opening of them between the call and their first event at a time), waits
// until every stream has delivered the order's CREATED event, prints "ready" on stderr and
// reads one line from stdin (so the caller can sample the servers), then ships and delivers
// each order in turn. It prints one JSON object on stdout:
//
//	{"watchers", "events" (deliveries expected), "received", "setup_ms", "p50_ms", "p99_ms",
//	 "max_ms", "errors" (by message, streams that failed)}
//
// A watcher that has not seen an event 10 s after its RPC returned counts as missing.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	ordersv1 "benchgo/gen/orders/v1"
)

func main() {
	targets := flag.String("targets", "", "orders replicas, host:port, comma-separated")
	watchers := flag.Int("watchers", 1000, "WatchOrder streams in all")
	connections := flag.Int("connections", 10, "HTTP/2 connections per target")
	orders := flag.Int("orders", 10, "orders watched (each by watchers/orders streams)")
	opening := flag.Int("opening", 100, "streams being opened at once at the most (until their CREATED event)")
	email := flag.String("email", "user0@bench.example", "an existing user's email, for CreateOrder")
	flag.Parse()
	report, err := run(strings.Split(*targets, ","), *watchers, *connections, *orders, *opening, *email)
	if err != nil {
		fmt.Fprintln(os.Stderr, "watch-fanout:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(report)
}

// report is what one fan-out run measured; latencies in milliseconds.
type report struct {
	Watchers int            `json:"watchers"`
	Events   int            `json:"events"`
	Received int            `json:"received"`
	SetupMs  float64        `json:"setup_ms"`
	P50Ms    float64        `json:"p50_ms"`
	P99Ms    float64        `json:"p99_ms"`
	MaxMs    float64        `json:"max_ms"`
	Errors   map[string]int `json:"errors"`
}

// watcher is one open stream's state: the order it follows and when each kind arrived.
type watcher struct {
	order    int
	mu       sync.Mutex
	arrived  map[ordersv1.OrderEventKind]time.Time
	ended    bool
	notified chan struct{}
}

func run(targets []string, watchers, connections, orders, opening int, email string) (*report, error) {
	if len(targets) == 0 || targets[0] == "" || watchers < 1 || connections < 1 || orders < 1 || opening < 1 {
		return nil, errors.New("-targets, and positive -watchers, -connections, -orders and -opening, are required")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var clients [][]ordersv1.OrderServiceClient
	for _, target := range targets {
		var perTarget []ordersv1.OrderServiceClient
		for range connections {
			conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return nil, fmt.Errorf("dial %s: %w", target, err)
			}
			defer conn.Close()
			perTarget = append(perTarget, ordersv1.NewOrderServiceClient(conn))
		}
		clients = append(clients, perTarget)
	}
	writer := clients[0][0]
	ids := make([]string, orders)
	for i := range ids {
		created, err := writer.CreateOrder(ctx, &ordersv1.CreateOrderRequest{
			CustomerEmail: email, TotalCents: 100, Currency: "EUR",
		})
		if err != nil {
			return nil, fmt.Errorf("create order: %w", err)
		}
		ids[i] = created.GetOrder().GetId()
	}

	started := time.Now()
	all := make([]*watcher, watchers)
	var errorsMu sync.Mutex
	failures := map[string]int{}
	var ready sync.WaitGroup
	// Each stream first reads its order's past events from the database: opening them all at
	// once would queue thousands of reads on a pool of 10. Watchers join at a bounded rate.
	slots := make(chan struct{}, opening)
	for i := range all {
		// Room for every send: CREATED, SHIPPED, DELIVERED and the end of the stream.
		w := &watcher{order: i % orders, arrived: map[ordersv1.OrderEventKind]time.Time{}, notified: make(chan struct{}, 5)}
		all[i] = w
		target := i % len(targets)
		client := clients[target][(i/len(targets))%connections]
		ready.Add(1)
		slots <- struct{}{}
		go func() {
			readyOnce := sync.OnceFunc(func() {
				<-slots
				ready.Done()
			})
			defer readyOnce()
			stream, err := client.WatchOrder(ctx, &ordersv1.WatchOrderRequest{OrderId: ids[w.order]})
			for err == nil {
				var message *ordersv1.WatchOrderResponse
				message, err = stream.Recv()
				if err != nil {
					break
				}
				kind := message.GetEvent().GetKind()
				w.mu.Lock()
				w.arrived[kind] = time.Now()
				w.mu.Unlock()
				if kind == ordersv1.OrderEventKind_ORDER_EVENT_KIND_CREATED {
					readyOnce()
				}
				w.notified <- struct{}{}
			}
			w.mu.Lock()
			w.ended = true
			w.mu.Unlock()
			w.notified <- struct{}{}
			errorsMu.Lock()
			// After the measurement, the streams end because this program cancels them.
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				failures[err.Error()]++
			}
			errorsMu.Unlock()
		}()
	}
	ready.Wait()
	setup := time.Since(started)
	fmt.Fprintln(os.Stderr, "ready")
	_, _ = fmt.Fscanln(os.Stdin)

	var latencies []float64
	events := 0
	for order, id := range ids {
		for _, step := range []struct {
			kind ordersv1.OrderEventKind
			call func() error
		}{
			{ordersv1.OrderEventKind_ORDER_EVENT_KIND_SHIPPED, func() error {
				_, err := writer.ShipOrder(ctx, &ordersv1.ShipOrderRequest{Id: id})
				return err
			}},
			{ordersv1.OrderEventKind_ORDER_EVENT_KIND_DELIVERED, func() error {
				_, err := writer.DeliverOrder(ctx, &ordersv1.DeliverOrderRequest{Id: id})
				return err
			}},
		} {
			sent := time.Now()
			if err := step.call(); err != nil {
				return nil, fmt.Errorf("%s order %s: %w", step.kind, id, err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for _, w := range all {
				if w.order != order {
					continue
				}
				events++
				if at, ok := w.waitFor(step.kind, deadline); ok {
					latencies = append(latencies, float64(at.Sub(sent).Microseconds())/1000)
				}
			}
		}
	}
	slices.Sort(latencies)
	errorsMu.Lock()
	cancel()
	failed := maps.Clone(failures)
	errorsMu.Unlock()
	return &report{
		Watchers: watchers,
		Events:   events,
		Received: len(latencies),
		SetupMs:  float64(setup.Microseconds()) / 1000,
		P50Ms:    percentile(latencies, 0.50),
		P99Ms:    percentile(latencies, 0.99),
		MaxMs:    percentile(latencies, 1),
		Errors:   failed,
	}, nil
}

// waitFor returns when `kind` reached this watcher, waiting until `deadline` at the most,
// and not at all once its stream has ended.
func (w *watcher) waitFor(kind ordersv1.OrderEventKind, deadline time.Time) (time.Time, bool) {
	for {
		w.mu.Lock()
		at, ok := w.arrived[kind]
		ended := w.ended
		w.mu.Unlock()
		if ok || ended {
			return at, ok
		}
		select {
		case <-w.notified:
		case <-time.After(time.Until(deadline)):
			return time.Time{}, false
		}
	}
}

// percentile is the nearest-rank percentile of sorted values (0 when there are none).
func percentile(sorted []float64, share float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(share*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(len(sorted)-1, index))]
}
