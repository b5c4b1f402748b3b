package streams

// Expressions in pipeline configurations, with expr-lang/expr: compiled
// and type-checked once at start against the record environment below,
// then run on each record by a reused VM.

import (
	"errors"
	"fmt"

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
	src     string
	prog    *vm.Program
	needs   []string // values.<name> the expression reads
	machine vm.VM
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
func CompileBool(src string) (*Expr, error) { return compile(src, expr.AsBool()) }

// CompileAny compiles an expression of any type (set, key).
func CompileAny(src string) (*Expr, error) { return compile(src) }

func compile(src string, opts ...expr.Option) (*Expr, error) {
	e := &Expr{src: src}
	needs := &valueRefs{}
	opts = append(opts, expr.Env(env{}), expr.Patch(needs))
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			return nil, &ExprError{Line: fe.Line, Column: fe.Column + 1, Message: fe.Message, Snippet: fe.Snippet}
		}
		return nil, err
	}
	e.prog, e.needs = prog, needs.names
	return e, nil
}

// valueRefs collects the names read as values.<name> or values["name"].
type valueRefs struct{ names []string }

func (v *valueRefs) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "values" {
		return
	}
	if s, ok := m.Property.(*ast.StringNode); ok {
		v.names = append(v.names, s.Value)
	}
}

// run evaluates e on r. ok is false when r lacks a value e reads: such a
// record does not match a condition and gets no computed value, rather
// than being an error.
func (e *Expr) run(r *Record) (out any, ok bool, err error) {
	for _, n := range e.needs {
		if _, has := r.Value(n); !has {
			return nil, false, nil
		}
	}
	out, err = e.machine.Run(e.prog, r.env())
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", e.src, err)
	}
	return out, true, nil
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

// env builds (once per record) what expressions see.
func (r *Record) env() *env {
	if r.expr != nil {
		return r.expr
	}
	e := &env{Key: string(r.Key), Ts: r.Timestamp, Values: kvMap(r.Values),
		Headers: make(map[string]string, len(r.Headers)), Attributes: kvMap(r.joined)}
	for _, h := range r.Headers {
		e.Headers[h.Key] = string(h.Value)
	}
	r.expr = e
	return e
}

func kvMap(kvs []tb.KV) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = anyValue(kv.Value)
	}
	return m
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
