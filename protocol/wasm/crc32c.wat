;; CRC32C (Castagnoli, reflected polynomial 0x82F63B78) for protocol/crc32c.ts.
;; After editing, regenerate protocol/crc32c-wasm.ts with `node protocol/wasm/build.mjs` (needs wabt's wat2wasm).
;;
;; Why it is fast without a carry-less multiply: the CRC is the remainder modulo P, and for any multiple Q of P,
;; M mod P = (M mod Q) mod P. We use multiples that are sparse polynomials in y = x^8 (whole bytes), so reducing the
;; message modulo Q needs no table lookups: for Q = y^D + y^a + y^b + 1, clearing the leading byte at stream
;; position j XORs it into positions j+D-a, j+D-b and j+D. Written the other way round ("pull"),
;;     b'[j] = b[j] ^ b'[j-(D-a)] ^ b'[j-(D-b)] ^ b'[j-D]
;; and since every distance is at least 16, sixteen bytes are done at once with v128 XORs, in place. Afterwards all
;; but the last D bytes are cleared, so the CRC of the whole is the CRC (from a zero register) of those D bytes.
;; The starting register enters by XOR into the first 4 bytes, as it does for any reflected CRC.
;;
;; P has the factor x+1, so its multiples have even weight; weight 4 is the sparsest and the shortest one found
;; (a meet-in-the-middle search over x^(8i) mod P) has D = 5424. Its 5424 remaining bytes are folded again with a
;; weight-6 multiple of degree 290, and only those last 290 bytes go through the slicing-by-16 tables. All distances
;; are >= 154 bytes: shorter ones made the reads hit stores still in flight and halved the speed.
;;   weight 4: y^5424 + y^4146 + y^3859 + 1
;;   weight 6: y^290 + y^136 + y^113 + y^107 + y^32 + 1
(module
  ;; Layout: [0, 16384)       16 tables of 256 u32, table k at 1024k: CRC register after byte b then k zero bytes;
  ;;                          written by the JS side (it builds the same tables for its fallback).
  ;;         [16384, 32768)   zeros, never written: the folds read up to D bytes before their start as zero history.
  ;;         [32768, 294912)  scratch: the JS side copies the input here, at most scratchSize bytes per call.
  ;; The memory never grows, so the JS side's views of it stay attached.
  (memory (export "memory") 5 5)
  (global (export "tables") i32 (i32.const 0))
  (global (export "scratch") i32 (i32.const 32768))
  (global (export "scratchSize") i32 (i32.const 262144))

  ;; Register after [p, end) from register $crc (not inverted): slicing-by-16, then a byte at a time.
  (func $tables (param $p i32) (param $end i32) (param $crc i32) (result i32)
    (local $w0 i32) (local $w1 i32) (local $w2 i32) (local $w3 i32)
    (block $done (loop $next
      (br_if $done (i32.gt_u (i32.add (local.get $p) (i32.const 16)) (local.get $end)))
      (local.set $w0 (i32.xor (i32.load (local.get $p)) (local.get $crc)))
      (local.set $w1 (i32.load offset=4 (local.get $p)))
      (local.set $w2 (i32.load offset=8 (local.get $p)))
      (local.set $w3 (i32.load offset=12 (local.get $p)))
      ;; Only the four $w0 lookups depend on the previous register; XOR them last.
      (local.set $crc
        (i32.xor
          (i32.xor
            (i32.xor
              (i32.xor (i32.load offset=11264 (i32.and (i32.shl (local.get $w1) (i32.const 2)) (i32.const 1020)))
                       (i32.load offset=10240 (i32.and (i32.shr_u (local.get $w1) (i32.const 6)) (i32.const 1020))))
              (i32.xor (i32.load offset=9216 (i32.and (i32.shr_u (local.get $w1) (i32.const 14)) (i32.const 1020)))
                       (i32.load offset=8192 (i32.and (i32.shr_u (local.get $w1) (i32.const 22)) (i32.const 1020)))))
            (i32.xor
              (i32.xor
                (i32.xor (i32.load offset=7168 (i32.and (i32.shl (local.get $w2) (i32.const 2)) (i32.const 1020)))
                         (i32.load offset=6144 (i32.and (i32.shr_u (local.get $w2) (i32.const 6)) (i32.const 1020))))
                (i32.xor (i32.load offset=5120 (i32.and (i32.shr_u (local.get $w2) (i32.const 14)) (i32.const 1020)))
                         (i32.load offset=4096 (i32.and (i32.shr_u (local.get $w2) (i32.const 22)) (i32.const 1020)))))
              (i32.xor
                (i32.xor (i32.load offset=3072 (i32.and (i32.shl (local.get $w3) (i32.const 2)) (i32.const 1020)))
                         (i32.load offset=2048 (i32.and (i32.shr_u (local.get $w3) (i32.const 6)) (i32.const 1020))))
                (i32.xor (i32.load offset=1024 (i32.and (i32.shr_u (local.get $w3) (i32.const 14)) (i32.const 1020)))
                         (i32.load (i32.and (i32.shr_u (local.get $w3) (i32.const 22)) (i32.const 1020)))))))
          (i32.xor
            (i32.xor (i32.load offset=15360 (i32.and (i32.shl (local.get $w0) (i32.const 2)) (i32.const 1020)))
                     (i32.load offset=14336 (i32.and (i32.shr_u (local.get $w0) (i32.const 6)) (i32.const 1020))))
            (i32.xor (i32.load offset=13312 (i32.and (i32.shr_u (local.get $w0) (i32.const 14)) (i32.const 1020)))
                     (i32.load offset=12288 (i32.and (i32.shr_u (local.get $w0) (i32.const 22)) (i32.const 1020)))))))
      (local.set $p (i32.add (local.get $p) (i32.const 16)))
      (br $next)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $crc
        (i32.xor
          (i32.load (i32.shl (i32.and (i32.xor (local.get $crc) (i32.load8_u (local.get $p))) (i32.const 255)) (i32.const 2)))
          (i32.shr_u (local.get $crc) (i32.const 8))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br $next)))
    (local.get $crc))

  ;; [dst, dst+len) ^= [src, src+len); the ranges do not overlap.
  (func $xorInto (param $dst i32) (param $src i32) (param $len i32)
    (local $end i32)
    (local.set $end (i32.add (local.get $dst) (local.get $len)))
    (block $done (loop $next
      (br_if $done (i32.gt_u (i32.add (local.get $dst) (i32.const 16)) (local.get $end)))
      (v128.store (local.get $dst) (v128.xor (v128.load (local.get $dst)) (v128.load (local.get $src))))
      (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
      (local.set $src (i32.add (local.get $src) (i32.const 16)))
      (br $next)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $dst) (local.get $end)))
      (i32.store8 (local.get $dst) (i32.xor (i32.load8_u (local.get $dst)) (i32.load8_u (local.get $src))))
      (local.set $dst (i32.add (local.get $dst) (i32.const 1)))
      (local.set $src (i32.add (local.get $src) (i32.const 1)))
      (br $next))))

  ;; Reduces [s, s+len) modulo y^5424 + y^4146 + y^3859 + 1 in place (len >= 5424; the 5424 bytes before s read as
  ;; zero) and returns s+len-5424, where the remainder's 5424 bytes start.
  ;; $b runs 5424 bytes behind the byte being finished, so the taps are the constant offsets 0, 3859, 4146.
  (func $fold4 (param $s i32) (param $len i32) (result i32)
    (local $b i32) (local $lim i32)
    (local.set $lim (i32.sub (i32.add (local.get $s) (local.get $len)) (i32.const 5424)))
    (local.set $b (i32.sub (local.get $s) (i32.const 5424)))
    ;; Bytes before $lim have all taps inside the data (or the zero history): the plain recurrence.
    (block $done (loop $next
      (br_if $done (i32.gt_u (i32.add (local.get $b) (i32.const 5488)) (local.get $lim)))
      (v128.store offset=5424 (local.get $b)
        (v128.xor (v128.xor (v128.load offset=5424 (local.get $b)) (v128.load offset=4146 (local.get $b)))
                  (v128.xor (v128.load offset=3859 (local.get $b)) (v128.load (local.get $b)))))
      (v128.store offset=5440 (local.get $b)
        (v128.xor (v128.xor (v128.load offset=5440 (local.get $b)) (v128.load offset=4162 (local.get $b)))
                  (v128.xor (v128.load offset=3875 (local.get $b)) (v128.load offset=16 (local.get $b)))))
      (v128.store offset=5456 (local.get $b)
        (v128.xor (v128.xor (v128.load offset=5456 (local.get $b)) (v128.load offset=4178 (local.get $b)))
                  (v128.xor (v128.load offset=3891 (local.get $b)) (v128.load offset=32 (local.get $b)))))
      (v128.store offset=5472 (local.get $b)
        (v128.xor (v128.xor (v128.load offset=5472 (local.get $b)) (v128.load offset=4194 (local.get $b)))
                  (v128.xor (v128.load offset=3907 (local.get $b)) (v128.load offset=48 (local.get $b)))))
      (local.set $b (i32.add (local.get $b) (i32.const 64)))
      (br $next)))
    (block $done (loop $next
      (br_if $done (i32.gt_u (i32.add (local.get $b) (i32.const 5440)) (local.get $lim)))
      (v128.store offset=5424 (local.get $b)
        (v128.xor (v128.xor (v128.load offset=5424 (local.get $b)) (v128.load offset=4146 (local.get $b)))
                  (v128.xor (v128.load offset=3859 (local.get $b)) (v128.load (local.get $b)))))
      (local.set $b (i32.add (local.get $b) (i32.const 16)))
      (br $next)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (i32.add (local.get $b) (i32.const 5424)) (local.get $lim)))
      (i32.store8 offset=5424 (local.get $b)
        (i32.xor (i32.xor (i32.load8_u offset=5424 (local.get $b)) (i32.load8_u offset=4146 (local.get $b)))
                 (i32.xor (i32.load8_u offset=3859 (local.get $b)) (i32.load8_u (local.get $b)))))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $next)))
    ;; The remainder bytes only receive pushes from bytes before $lim (they are never cleared themselves): per tap
    ;; of distance d, the d bytes before $lim are XORed into the first d remainder bytes.
    (call $xorInto (local.get $lim) (i32.sub (local.get $lim) (i32.const 1278)) (i32.const 1278))
    (call $xorInto (local.get $lim) (i32.sub (local.get $lim) (i32.const 1565)) (i32.const 1565))
    (call $xorInto (local.get $lim) (i32.sub (local.get $lim) (i32.const 5424)) (i32.const 5424))
    (local.get $lim))

  ;; As $fold4, modulo y^290 + y^136 + y^113 + y^107 + y^32 + 1 (len >= 290; the 290 bytes before s read as zero).
  (func $fold6 (param $s i32) (param $len i32) (result i32)
    (local $b i32) (local $lim i32)
    (local.set $lim (i32.sub (i32.add (local.get $s) (local.get $len)) (i32.const 290)))
    (local.set $b (i32.sub (local.get $s) (i32.const 290)))
    (block $done (loop $next
      (br_if $done (i32.gt_u (i32.add (local.get $b) (i32.const 322)) (local.get $lim)))
      (v128.store offset=290 (local.get $b)
        (v128.xor
          (v128.xor (v128.load offset=290 (local.get $b)) (v128.load offset=136 (local.get $b)))
          (v128.xor (v128.xor (v128.load offset=113 (local.get $b)) (v128.load offset=107 (local.get $b)))
                    (v128.xor (v128.load offset=32 (local.get $b)) (v128.load (local.get $b))))))
      (v128.store offset=306 (local.get $b)
        (v128.xor
          (v128.xor (v128.load offset=306 (local.get $b)) (v128.load offset=152 (local.get $b)))
          (v128.xor (v128.xor (v128.load offset=129 (local.get $b)) (v128.load offset=123 (local.get $b)))
                    (v128.xor (v128.load offset=48 (local.get $b)) (v128.load offset=16 (local.get $b))))))
      (local.set $b (i32.add (local.get $b) (i32.const 32)))
      (br $next)))
    (block $done (loop $next
      (br_if $done (i32.gt_u (i32.add (local.get $b) (i32.const 306)) (local.get $lim)))
      (v128.store offset=290 (local.get $b)
        (v128.xor
          (v128.xor (v128.load offset=290 (local.get $b)) (v128.load offset=136 (local.get $b)))
          (v128.xor (v128.xor (v128.load offset=113 (local.get $b)) (v128.load offset=107 (local.get $b)))
                    (v128.xor (v128.load offset=32 (local.get $b)) (v128.load (local.get $b))))))
      (local.set $b (i32.add (local.get $b) (i32.const 16)))
      (br $next)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (i32.add (local.get $b) (i32.const 290)) (local.get $lim)))
      (i32.store8 offset=290 (local.get $b)
        (i32.xor
          (i32.xor (i32.load8_u offset=290 (local.get $b)) (i32.load8_u offset=136 (local.get $b)))
          (i32.xor (i32.xor (i32.load8_u offset=113 (local.get $b)) (i32.load8_u offset=107 (local.get $b)))
                   (i32.xor (i32.load8_u offset=32 (local.get $b)) (i32.load8_u (local.get $b))))))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $next)))
    (call $xorInto (local.get $lim) (i32.sub (local.get $lim) (i32.const 154)) (i32.const 154))
    (call $xorInto (local.get $lim) (i32.sub (local.get $lim) (i32.const 177)) (i32.const 177))
    (call $xorInto (local.get $lim) (i32.sub (local.get $lim) (i32.const 183)) (i32.const 183))
    (call $xorInto (local.get $lim) (i32.sub (local.get $lim) (i32.const 258)) (i32.const 258))
    (call $xorInto (local.get $lim) (i32.sub (local.get $lim) (i32.const 290)) (i32.const 290))
    (local.get $lim))

  ;; CRC32C of the first $n bytes of scratch (n <= scratchSize), continuing from the finished CRC $previous.
  (func (export "crc") (param $n i32) (param $previous i32) (result i32)
    (local $reg i32) (local $s i32) (local $len i32)
    (local.set $reg (i32.xor (local.get $previous) (i32.const -1)))
    ;; Below this the folds' fixed cost (their tail XORs and 290 bytes of table lookups) outweighs what they save.
    (if (i32.lt_u (local.get $n) (i32.const 576))
      (then
        (return (i32.xor (call $tables (i32.const 32768) (i32.add (i32.const 32768) (local.get $n)) (local.get $reg))
                         (i32.const -1)))))
    (i32.store (i32.const 32768) (i32.xor (i32.load (i32.const 32768)) (local.get $reg)))
    (local.set $s (i32.const 32768))
    (local.set $len (local.get $n))
    ;; The weight-4 fold reads a third fewer bytes per byte than the weight-6 one but leaves 5424 bytes to fold again.
    (if (i32.ge_u (local.get $n) (i32.const 16384))
      (then
        (local.set $s (call $fold4 (local.get $s) (local.get $len)))
        (local.set $len (i32.const 5424))
        ;; $fold6 needs zero history; the bytes before the remainder are spent.
        (memory.fill (i32.sub (local.get $s) (i32.const 290)) (i32.const 0) (i32.const 290))))
    (local.set $s (call $fold6 (local.get $s) (local.get $len)))
    (i32.xor (call $tables (local.get $s) (i32.add (local.get $s) (i32.const 290)) (i32.const 0)) (i32.const -1))))
