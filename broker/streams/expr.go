package streams

// Expressions in pipeline configurations, with expr-lang/expr: compiled
// and type-checked once at start against the record environment below,
// then run on each record by a reused VM.

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	tb "github.com/ferry-iot/ferry/devices/thingsboard"
)

// env is what an expression sees of a record.
type env struct {
	Key        string            `expr:"key"`        // the device
	Ts         int64             `expr:"ts"`         // the event time, ms since the epoch
	Values     map[string]any    `expr:"values"`     // the values: float64, int64, bool, string, or decoded JSON
	Headers    map[string]string `expr:"headers"`    // device, device_type, gateway
	Attributes map[string]any    `expr:"attributes"` // the joined table's row (join:), empty without one
}

// Expr is a compiled expression.
type Expr struct {
	src      string
	prog     *vm.Program
	refs     *refs
	env      env // reused: filled per record with what the expression reads
	vm       vm.VM
	hdrNames []string // the headers it reads by name, once each
	// What the expression reads, decided once at compile (fill runs per record).
	valueNames, attrNames                       []string
	usesKey, usesValues, usesHeaders, usesAttrs bool
	allValues, allHeaders, allAttrs             bool
	borrow                                      bool // a boolean expression: its environment may borrow the record's bytes (str)
}

// ExprError is a compile error with its position in the expression.
type ExprError struct {
	Line, Column int
	Message      string
	Snippet      string
}

func (e *ExprError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s%s", e.Line, e.Column, e.Message, e.Snippet)
}

// CompileBool compiles an expression that must yield a boolean (where,
// alert when/clear).
func CompileBool(src string) (*Expr, error) {
	e, err := compile(src, expr.AsBool())
	if e != nil {
		e.borrow = true
	}
	return e, err
}

// CompileAny compiles an expression of any type (set, key).
func CompileAny(src string) (*Expr, error) { return compile(src) }

func compile(src string, opts ...expr.Option) (*Expr, error) {
	e := &Expr{src: src, refs: &refs{names: map[string][]string{}, uses: map[string]int{}, members: map[string]int{}}}
	opts = append(opts, expr.Env(env{}), expr.Patch(e.refs))
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return nil, &ExprError{Line: fe.Line, Column: fe.Column + 1, Message: fe.Message, Snippet: fe.Snippet}
		}
		return nil, err
	}
	e.prog = prog
	r := e.refs
	e.hdrNames = slices.Compact(slices.Sorted(slices.Values(r.names["headers"])))
	e.valueNames, e.attrNames = r.names["values"], r.names["attributes"]
	e.usesKey, e.usesValues, e.usesHeaders, e.usesAttrs = r.uses["key"] > 0, r.uses["values"] > 0, r.uses["headers"] > 0, r.uses["attributes"] > 0
	e.allValues, e.allHeaders, e.allAttrs = r.whole("values"), r.whole("headers"), r.whole("attributes")
	e.env = env{Values: map[string]any{}, Headers: map[string]string{}, Attributes: map[string]any{}}
	return e, nil
}

// refs records what an expression reads of values, headers and
// attributes: the names it reads as x.name or x["name"], and whether it
// uses one whole (len(values), values[k]): then all of it is filled in.
type refs struct {
	names   map[string][]string
	uses    map[string]int // identifier occurrences
	members map[string]int // of which as the base of x.name
}

func (v *refs) Visit(node *ast.Node) {
	switch n := (*node).(type) {
	case *ast.IdentifierNode:
		v.uses[n.Value]++
	case *ast.MemberNode:
		id, ok := n.Node.(*ast.IdentifierNode)
		if !ok {
			return
		}
		if s, ok := n.Property.(*ast.StringNode); ok {
			v.names[id.Value] = append(v.names[id.Value], s.Value)
			v.members[id.Value]++
		}
	}
}

func (v *refs) whole(id string) bool { return v.uses[id] > v.members[id] }

// readsValues reports whether the expression reads the record's values
// (which must then be parsed).
func (e *Expr) readsValues() bool { return e.usesValues }

// run evaluates e on r. ok is false when r lacks a value e reads: such a
// record does not match a condition and gets no computed value, rather
// than being an error.
func (e *Expr) run(r *Record) (out any, ok bool, err error) {
	for _, n := range e.valueNames {
		if _, has := r.Value(n); !has {
			return nil, false, nil
		}
	}
	e.fill(r)
	out, err = e.vm.Run(e.prog, &e.env)
	if e.borrow {
		e.release()
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", e.src, err)
	}
	return out, true, nil
}

// fill sets e's environment to what it reads of r.
func (e *Expr) fill(r *Record) {
	en := &e.env
	en.Ts = r.Timestamp
	if e.usesKey {
		en.Key = e.str(r.Key)
	}
	fillKVs(en.Values, r.Values, e.valueNames, e.allValues, e.usesValues)
	fillKVs(en.Attributes, r.joined, e.attrNames, e.allAttrs, e.usesAttrs)
	if e.usesHeaders {
		if e.allHeaders {
			clear(en.Headers)
			for _, h := range r.Headers {
				en.Headers[h.Key] = e.str(h.Value)
			}
		} else {
			for _, name := range e.hdrNames {
				if v, ok := headerValue(r.Headers, name); ok {
					en.Headers[name] = e.str(v)
				} else {
					delete(en.Headers, name)
				}
			}
		}
	}
}

func fillKVs(m map[string]any, kvs []tb.KV, names []string, whole, used bool) {
	if !used {
		return
	}
	clear(m)
	if whole {
		for _, kv := range kvs {
			m[kv.Key] = anyValue(kv.Value)
		}
		return
	}
	for _, name := range names {
		for i := range kvs {
			if kvs[i].Key == name {
				m[name] = anyValue(kvs[i].Value)
			}
		}
	}
}

// str is b as a string for the environment. A boolean expression's
// result cannot hold on to it, so it borrows b's bytes (no copy per
// record) and release drops every borrowed string after the run; other
// expressions may return it, and get a copy.
func (e *Expr) str(b []byte) string {
	if e.borrow {
		return unsafe.String(unsafe.SliceData(b), len(b))
	}
	return string(b)
}

// release empties the environment of strings borrowed from a record.
func (e *Expr) release() {
	e.env.Key = ""
	if e.allHeaders {
		clear(e.env.Headers)
		return
	}
	for _, name := range e.hdrNames {
		if _, ok := e.env.Headers[name]; ok {
			e.env.Headers[name] = ""
		}
	}
}

// Bool evaluates a CompileBool expression; a record lacking a value it
// reads is false.
func (e *Expr) Bool(r *Record) (bool, error) {
	out, ok, err := e.run(r)
	if err != nil || !ok {
		return false, err
	}
	b, isBool := out.(bool)
	if !isBool {
		return false, fmt.Errorf("%s: yields %T, not a boolean", e.src, out)
	}
	return b, nil
}

func anyValue(v tb.Value) any {
	switch v.Kind {
	case tb.KindBool:
		return v.Bool
	case tb.KindLong:
		return v.Long
	case tb.KindDouble:
		return v.Double
	case tb.KindString:
		return v.Str
	default:
		var x any
		if err := jsonUnmarshal(v.JSON, &x); err != nil {
			return string(v.JSON)
		}
		return x
	}
}

// valueOf converts an expression's result to a record value.
func valueOf(x any) (tb.Value, error) {
	switch v := x.(type) {
	case bool:
		return tb.Value{Kind: tb.KindBool, Bool: v}, nil
	case int:
		return Long(int64(v)), nil
	case int64:
		return Long(v), nil
	case float64:
		return Double(v), nil
	case string:
		return String(v), nil
	case nil:
		return tb.Value{}, errors.New("the expression yields nil")
	default:
		b, err := jsonMarshal(v)
		if err != nil {
			return tb.Value{}, fmt.Errorf("the expression yields %T: %w", x, err)
		}
		return tb.Value{Kind: tb.KindJSON, JSON: b}, nil
	}
}
