package kafkaserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"hash/crc32"
	"math/big"
	"strconv"
	"testing"
	"time"

	"github.com/ferry-iot/ferry/broker/commitlog"
)

func flagsTopic(parts int) commitlog.TopicConfig { return commitlog.TopicConfig{Partitions: parts} }

// appendN appends n records of size bytes each to partition 0, one per
// batch, and waits until they are durable.
func appendN(t *testing.T, tp *commitlog.Topic, n, size int) {
	t.Helper()
	p, err := tp.Partition(0)
	if err != nil {
		t.Fatal(err)
	}
	val := make([]byte, size)
	var last *commitlog.Future
	for i := 0; i < n; i++ {
		last = p.Append(context.Background(), []commitlog.Record{{Key: []byte("k" + strconv.Itoa(i)), Value: val}})
		if i%8 == 7 {
			if _, err := last.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := last.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// kgoFetchPart decodes a Fetch partition's record bytes.
type kgoFetchPart struct{ first, last int64 }

func (f *kgoFetchPart) count(t *testing.T, b []byte) int {
	t.Helper()
	n := 0
	f.first, f.last = -1, -1
	d := commitlog.NewDecompressor(64 << 20)
	err := commitlog.SplitBatches(b, func(_ commitlog.BatchHeader, batch []byte) error {
		_, recs, err := commitlog.DecodeRecords(batch, d)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if f.first < 0 {
				f.first = r.Offset
			}
			f.last = r.Offset
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

func setI32(b []byte, at int, v int32) []byte {
	c := append([]byte(nil), b...)
	binary.BigEndian.PutUint32(c[at:], uint32(v))
	return c
}

func setI16(b []byte, at int, v int16) []byte {
	c := append([]byte(nil), b...)
	binary.BigEndian.PutUint16(c[at:], uint16(v))
	return c
}

// recrc recomputes a batch's CRC after a deliberate edit.
func recrc(b []byte) []byte {
	binary.BigEndian.PutUint32(b[17:], crc32c(b[21:]))
	return b
}

func setI8(b []byte, at int, v int8) []byte {
	c := append([]byte(nil), b...)
	c[at] = byte(v)
	return c
}
