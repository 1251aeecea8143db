// Command trustharness replays trust-metric event scripts through tendermint v0.34.24's
// real p2p/trust package and prints what it computes, for the parity test
// (tests/interop/test_trust_interop.py).
//
// Modes (first argument); input is one JSON document on stdin, output one on stdout:
//
//	replay        [script...] -> [{"values": [[before, after], ...], "final": history}, ...]
//	store-export  {"peer": script, ...} -> the bytes MetricStore saves under "trustMetricStore"
//	store-import  <bytes of a saved store> -> {"peer": ["value at load", "value after one interval"]}
//
// A script is {"config": {...durations in ns...}, "init": history or null,
// "steps": [[good, bad, pause], ...]}: each step records the events, pauses if asked, then
// ends the interval through the package's TestTicker.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/tendermint/tendermint/p2p/trust"
	dbm "github.com/tendermint/tm-db"
)

type config struct {
	ProportionalWeight float64 `json:"proportional_weight"`
	IntegralWeight     float64 `json:"integral_weight"`
	TrackingWindowNs   int64   `json:"tracking_window_ns"`
	IntervalNs         int64   `json:"interval_ns"`
}

func (c config) metricConfig() trust.MetricConfig {
	return trust.MetricConfig{
		ProportionalWeight: c.ProportionalWeight,
		IntegralWeight:     c.IntegralWeight,
		TrackingWindow:     time.Duration(c.TrackingWindowNs),
		IntervalLength:     time.Duration(c.IntervalNs),
	}
}

type script struct {
	Config config                   `json:"config"`
	Init   *trust.MetricHistoryJSON `json:"init"`
	Steps  [][3]int                 `json:"steps"`
}

type result struct {
	Values [][2]float64            `json:"values"`
	Final  trust.MetricHistoryJSON `json:"final"`
}

// ticked is a metric whose intervals end only when the harness ticks its TestTicker.
// Metric.Start's own loop gives no signal when NextTimeInterval has finished, so reading
// the value right after NextTick would race (the package marks its own pause test as
// flaky for that reason); this loop acknowledges each tick once it is applied.
type ticked struct {
	metric *trust.Metric
	ticker *trust.TestTicker
	ack    chan struct{}
}

func newTicked(m *trust.Metric) *ticked {
	t := &ticked{metric: m, ticker: trust.NewTestTicker(), ack: make(chan struct{})}
	go func() {
		for range t.ticker.GetChannel() {
			t.metric.NextTimeInterval()
			t.ack <- struct{}{}
		}
	}()
	return t
}

func (t *ticked) tick() {
	t.ticker.NextTick()
	<-t.ack
}

func run(s script) (*trust.Metric, result) {
	m := trust.NewMetricWithConfig(s.Config.metricConfig())
	if s.Init != nil {
		m.Init(*s.Init)
	}
	t := newTicked(m)
	res := result{Values: make([][2]float64, 0, len(s.Steps))}
	for _, st := range s.Steps {
		if st[0] > 0 {
			m.GoodEvents(st[0])
		}
		if st[1] > 0 {
			m.BadEvents(st[1])
		}
		if st[2] != 0 {
			m.Pause()
		}
		before := m.TrustValue()
		t.tick()
		res.Values = append(res.Values, [2]float64{before, m.TrustValue()})
	}
	res.Final = m.HistoryJSON()
	return m, res
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "trustharness:", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail(fmt.Errorf("usage: trustharness replay|store-export|store-import < input.json"))
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var out []byte
	switch os.Args[1] {
	case "replay":
		var scripts []script
		if err := json.Unmarshal(input, &scripts); err != nil {
			fail(err)
		}
		results := make([]result, 0, len(scripts))
		for _, s := range scripts {
			_, r := run(s)
			results = append(results, r)
		}
		out, err = json.Marshal(results)
	case "store-export":
		var peers map[string]script
		if err := json.Unmarshal(input, &peers); err != nil {
			fail(err)
		}
		db := dbm.NewMemDB()
		store := trust.NewTrustMetricStore(db, trust.DefaultConfig())
		if err := store.Start(); err != nil {
			fail(err)
		}
		for key, s := range peers {
			m, _ := run(s)
			store.AddPeerTrustMetric(key, m)
		}
		if err := store.Stop(); err != nil { // OnStop saves to the DB
			fail(err)
		}
		out, err = db.Get([]byte("trustMetricStore"))
	case "store-import":
		db := dbm.NewMemDB()
		if err := db.Set([]byte("trustMetricStore"), input); err != nil {
			fail(err)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(input, &keys); err != nil {
			fail(err)
		}
		store := trust.NewTrustMetricStore(db, trust.DefaultConfig())
		if err := store.Start(); err != nil {
			fail(err)
		}
		// Values as strconv text: Go's Init can produce NaN (intervals = 0), which JSON cannot hold.
		values := make(map[string][2]string, len(keys))
		for key := range keys {
			m := store.GetPeerTrustMetric(key)
			loaded := m.TrustValue()
			m.NextTimeInterval()
			values[key] = [2]string{
				strconv.FormatFloat(loaded, 'g', -1, 64),
				strconv.FormatFloat(m.TrustValue(), 'g', -1, 64),
			}
		}
		out, err = json.Marshal(values)
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
	if err != nil {
		fail(err)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fail(err)
	}
}
