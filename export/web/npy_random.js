/**
 * numpy's default random generator, bit for bit, in the browser and in node.
 *
 * Reproduces these numpy (>= 1.17, checked on 2.4) calls exactly:
 *
 *   rng = np.random.default_rng(seed)                # SeedSequence(seed) -> PCG64
 *   rng.standard_normal((n, d), dtype=np.float32)    # priorZ(n, d, seed)
 *   rng.random(n)                                    # Generator.random(n)   (float64)
 *   rng.choice(K, size=n, p=weights)                 # Generator.choice(K, n, weights)
 *
 * - SeedSequence: numpy/random/bit_generator.pyx (the seed's 32-bit words, low
 *   first, hash-mixed into a pool of 4 words; generate_state(4, uint64)).
 * - PCG64: numpy/random/src/pcg64/pcg64.h (128-bit LCG, XSL-RR output of the
 *   new state; `next_uint32` hands out the low then the buffered high half of
 *   one 64-bit draw, exactly as pcg64_next32 does).
 * - random_standard_normal_f: numpy/random/src/distributions/distributions.c,
 *   the float32 ziggurat with numpy's ki_float / wi_float / fi_float tables
 *   (ziggurat_constants.h, stored below as their float32 bit patterns),
 *   including the wedge rejection and the tail (idx 0) branch.
 *
 * Floating point is done the way the compiled C does it: float32 operations
 * are rounded with Math.fround after each step, `exp(-0.5 * x * x)` in double.
 * The tail calls the C library's `log1pf`; numpy wheels on glibc (<= 2.40)
 * get fdlibm's float algorithm, reproduced here in `log1pf` (equal to glibc
 * 2.36's for all 2**24 arguments the ziggurat can pass it). A C library whose
 * log1pf rounds differently makes numpy itself draw different tail values.
 * The wedge compares a float32 with a double `exp`; V8's and glibc's `exp`
 * can differ in the last double bit, which changes a draw only when
 * exp(-x*x/2) rounds to within one double ulp of a float32 (about 1 in 1e10 draws).
 *
 * Also `interpolate`/`slerp`, the same as keras_vae/recipes.py's `interpolate`,
 * and `mixturePriorZ`, a draw from a Gaussian-mixture prior (see there).
 *
 * Pure ES module, no dependencies: `import { priorZ } from "./npy_random.js"`.
 */

const MASK32 = 0xffffffff;
const MASK64 = (1n << 64n) - 1n;
const MASK128 = (1n << 128n) - 1n;

// ------------------------------------------------------------ SeedSequence

const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;
const XSHIFT = 16;
const POOL_SIZE = 4;

/**
 * A non-negative integer seed as a BigInt.
 *
 * Accepts a safe-integer Number, a BigInt, or a decimal (or `0x` hex) string,
 * so seeds beyond 2**53 (e.g. "9223372036854775807") keep every bit.
 *
 * @throws {RangeError} a negative, fractional or malformed seed.
 */
export function toSeed(seed) {
  let value;
  if (typeof seed === "bigint") {
    value = seed;
  } else if (typeof seed === "number") {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(`seed must be an integer below 2**53 as a Number (pass a BigInt or a string beyond), got ${seed}`);
    }
    value = BigInt(seed);
  } else if (typeof seed === "string" && /^\s*(0x[0-9a-fA-F]+|[0-9]+)\s*$/.test(seed)) {
    value = BigInt(seed.trim());
  } else {
    throw new RangeError(`seed must be a non-negative integer, got ${JSON.stringify(String(seed))}`);
  }
  if (value < 0n) throw new RangeError(`seed must be non-negative, got ${value}`);
  return value;
}

/** numpy's `_int_to_uint32_array`: 32-bit words, lowest first; 0 is one word. */
function seedWords(seed) {
  let n = toSeed(seed);
  const words = [];
  if (n === 0n) words.push(0);
  while (n > 0n) {
    words.push(Number(n & 0xffffffffn));
    n >>= 32n;
  }
  return words;
}

function hashmix(value, hashConst) {
  value = (value ^ hashConst[0]) >>> 0;
  hashConst[0] = Math.imul(hashConst[0], MULT_A) >>> 0;
  value = Math.imul(value, hashConst[0]) >>> 0;
  return (value ^ (value >>> XSHIFT)) >>> 0;
}

function mix(x, y) {
  const result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
  return (result ^ (result >>> XSHIFT)) >>> 0;
}

/** `np.random.SeedSequence(seed)` (no spawn key, pool size 4). */
export class SeedSequence {
  constructor(seed) {
    const entropy = seedWords(seed);
    const pool = new Uint32Array(POOL_SIZE);
    const hashConst = [INIT_A];
    for (let i = 0; i < POOL_SIZE; i++) {
      pool[i] = hashmix(i < entropy.length ? entropy[i] : 0, hashConst);
    }
    for (let src = 0; src < POOL_SIZE; src++) {
      for (let dst = 0; dst < POOL_SIZE; dst++) {
        if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src], hashConst));
      }
    }
    for (let src = POOL_SIZE; src < entropy.length; src++) {
      for (let dst = 0; dst < POOL_SIZE; dst++) {
        pool[dst] = mix(pool[dst], hashmix(entropy[src], hashConst));
      }
    }
    this.pool = pool;
  }

  /** `generate_state(nWords, np.uint32)` as a Uint32Array. */
  generateState(nWords) {
    const state = new Uint32Array(nWords);
    let hashConst = INIT_B;
    for (let i = 0; i < nWords; i++) {
      let value = (this.pool[i % POOL_SIZE] ^ hashConst) >>> 0;
      hashConst = Math.imul(hashConst, MULT_B) >>> 0;
      value = Math.imul(value, hashConst) >>> 0;
      state[i] = (value ^ (value >>> XSHIFT)) >>> 0;
    }
    return state;
  }

  /** `generate_state(nWords, np.uint64)`: little-endian pairs of 32-bit words, as BigInts. */
  generateState64(nWords) {
    const words = this.generateState(2 * nWords);
    const out = [];
    for (let i = 0; i < nWords; i++) {
      out.push((BigInt(words[2 * i + 1]) << 32n) | BigInt(words[2 * i]));
    }
    return out;
  }
}

// ------------------------------------------------------------------ PCG64

const PCG_MULT = (0x2360ed051fc65da4n << 64n) | 0x4385df649fccf645n;

/** `np.random.PCG64(seed)`: the 128-bit LCG with XSL-RR output and numpy's 32-bit buffer. */
export class PCG64 {
  constructor(seed) {
    const [s0, s1, i0, i1] = new SeedSequence(seed).generateState64(4);
    const initState = (s0 << 64n) | s1;
    const initSeq = (i0 << 64n) | i1;
    // pcg_setseq_128_srandom_r
    this.inc = ((initSeq << 1n) | 1n) & MASK128;
    this.state = 0n;
    this.step();
    this.state = (this.state + initState) & MASK128;
    this.step();
    this.hasUint32 = false;
    this.uinteger = 0;
  }

  step() {
    this.state = (this.state * PCG_MULT + this.inc) & MASK128;
  }

  /** pcg64_next64: step, then XSL-RR of the new state; a BigInt below 2**64. */
  next64() {
    this.step();
    const s = this.state;
    const x = ((s >> 64n) ^ s) & MASK64;
    const rot = s >> 122n;
    return ((x >> rot) | (x << ((64n - rot) & 63n))) & MASK64;
  }

  /** pcg64_next32: the low half of a 64-bit draw now, its high half next time. */
  next32() {
    if (this.hasUint32) {
      this.hasUint32 = false;
      return this.uinteger;
    }
    const next = this.next64();
    this.hasUint32 = true;
    this.uinteger = Number(next >> 32n);
    return Number(next & 0xffffffffn);
  }

  /** uint64_to_double: 53 high bits of a 64-bit draw, in [0, 1). */
  nextDouble() {
    return Number(this.next64() >> 11n) * (1.0 / 9007199254740992.0);
  }

  /** next_float (distributions.c): 24 high bits of a 32-bit draw, in [0, 1). */
  nextFloat() {
    return (this.next32() >>> 8) * (1.0 / 16777216.0);
  }
}

// ------------------------------------------------- the float32 ziggurat

// numpy's ziggurat_constants.h: ki_float as is, wi_float and fi_float as float32 bit patterns.
const KI_FLOAT = Uint32Array.of(
  0x007799EC, 0x00000000, 0x006045F5, 0x006D1AA8, 0x00728FB4, 0x007592AF, 0x00777A5C, 0x0078CA38,
  0x0079BF6B, 0x007A7A35, 0x007B0D2F, 0x007B83D4, 0x007BE597, 0x007C3788, 0x007C7D33, 0x007CB926,
  0x007CED48, 0x007D1B08, 0x007D437F, 0x007D678B, 0x007D87DB, 0x007DA4FC, 0x007DBF61, 0x007DD767,
  0x007DED5D, 0x007E0183, 0x007E1411, 0x007E2534, 0x007E3515, 0x007E43D5, 0x007E5193, 0x007E5E67,
  0x007E6A69, 0x007E75AA, 0x007E803E, 0x007E8A32, 0x007E9395, 0x007E9C72, 0x007EA4D5, 0x007EACC6,
  0x007EB44E, 0x007EBB75, 0x007EC243, 0x007EC8BC, 0x007ECEE8, 0x007ED4CC, 0x007EDA6B, 0x007EDFCB,
  0x007EE4EF, 0x007EE9DC, 0x007EEE94, 0x007EF31B, 0x007EF774, 0x007EFBA0, 0x007EFFA3, 0x007F037F,
  0x007F0736, 0x007F0ACA, 0x007F0E3C, 0x007F118F, 0x007F14C4, 0x007F17DC, 0x007F1ADA, 0x007F1DBD,
  0x007F2087, 0x007F233A, 0x007F25D7, 0x007F285D, 0x007F2AD0, 0x007F2D2E, 0x007F2F7A, 0x007F31B3,
  0x007F33DC, 0x007F35F3, 0x007F37FB, 0x007F39F3, 0x007F3BDC, 0x007F3DB7, 0x007F3F84, 0x007F4145,
  0x007F42F8, 0x007F449F, 0x007F463A, 0x007F47CA, 0x007F494E, 0x007F4AC8, 0x007F4C38, 0x007F4D9D,
  0x007F4EF9, 0x007F504C, 0x007F5195, 0x007F52D5, 0x007F540D, 0x007F553D, 0x007F5664, 0x007F5784,
  0x007F589C, 0x007F59AC, 0x007F5AB5, 0x007F5BB8, 0x007F5CB3, 0x007F5DA8, 0x007F5E96, 0x007F5F7E,
  0x007F605F, 0x007F613B, 0x007F6210, 0x007F62E0, 0x007F63AA, 0x007F646F, 0x007F652E, 0x007F65E8,
  0x007F669C, 0x007F674C, 0x007F67F6, 0x007F689C, 0x007F693C, 0x007F69D9, 0x007F6A70, 0x007F6B03,
  0x007F6B91, 0x007F6C1B, 0x007F6CA0, 0x007F6D21, 0x007F6D9E, 0x007F6E17, 0x007F6E8C, 0x007F6EFC,
  0x007F6F68, 0x007F6FD1, 0x007F7035, 0x007F7096, 0x007F70F3, 0x007F714C, 0x007F71A1, 0x007F71F2,
  0x007F723F, 0x007F7289, 0x007F72CF, 0x007F7312, 0x007F7350, 0x007F738B, 0x007F73C3, 0x007F73F6,
  0x007F7427, 0x007F7453, 0x007F747C, 0x007F74A1, 0x007F74C3, 0x007F74E0, 0x007F74FB, 0x007F7511,
  0x007F7524, 0x007F7533, 0x007F753F, 0x007F7546, 0x007F754A, 0x007F754B, 0x007F7547, 0x007F753F,
  0x007F7534, 0x007F7524, 0x007F7511, 0x007F74F9, 0x007F74DE, 0x007F74BE, 0x007F749A, 0x007F7472,
  0x007F7445, 0x007F7414, 0x007F73DF, 0x007F73A5, 0x007F7366, 0x007F7323, 0x007F72DA, 0x007F728D,
  0x007F723A, 0x007F71E3, 0x007F7186, 0x007F7123, 0x007F70BB, 0x007F704D, 0x007F6FD9, 0x007F6F5F,
  0x007F6EDF, 0x007F6E58, 0x007F6DCB, 0x007F6D37, 0x007F6C9C, 0x007F6BF9, 0x007F6B4F, 0x007F6A9C,
  0x007F69E2, 0x007F691F, 0x007F6854, 0x007F677F, 0x007F66A1, 0x007F65B8, 0x007F64C6, 0x007F63C8,
  0x007F62C0, 0x007F61AB, 0x007F608A, 0x007F5F5D, 0x007F5E21, 0x007F5CD8, 0x007F5B7F, 0x007F5A17,
  0x007F589E, 0x007F5713, 0x007F5575, 0x007F53C4, 0x007F51FE, 0x007F5022, 0x007F4E2F, 0x007F4C22,
  0x007F49FA, 0x007F47B6, 0x007F4553, 0x007F42CF, 0x007F4028, 0x007F3D5A, 0x007F3A64, 0x007F3741,
  0x007F33ED, 0x007F3065, 0x007F2CA4, 0x007F28A4, 0x007F245F, 0x007F1FCE, 0x007F1AEA, 0x007F15A9,
  0x007F1000, 0x007F09E4, 0x007F0346, 0x007EFC16, 0x007EF43E, 0x007EEBA8, 0x007EE237, 0x007ED7C8,
  0x007ECC2F, 0x007EBF37, 0x007EB09D, 0x007EA00A, 0x007E8D0D, 0x007E7710, 0x007E5D47, 0x007E3E93,
  0x007E1959, 0x007DEB2C, 0x007DB036, 0x007D6203, 0x007CF4B9, 0x007C4FD2, 0x007B3630, 0x0078D2D2,
);
const WI_FLOAT_BITS = Uint32Array.of(
  0x34FA49DC, 0x32DC685F, 0x3312857A, 0x332BE5CA, 0x33400FE7, 0x33511861, 0x33600269, 0x336D617B,
  0x33799241, 0x33826991, 0x3387A82A, 0x338C9535, 0x33913D14, 0x3395A972, 0x3399E1FE, 0x339DECF6,
  0x33A1CF7C, 0x33A58DDA, 0x33A92BAB, 0x33ACAC05, 0x33B0118E, 0x33B35E93, 0x33B69515, 0x33B9B6D7,
  0x33BCC569, 0x33BFC22D, 0x33C2AE63, 0x33C58B25, 0x33C85975, 0x33CB1A3C, 0x33CDCE4C, 0x33D07667,
  0x33D3133B, 0x33D5A56B, 0x33D82D8B, 0x33DAAC24, 0x33DD21B4, 0x33DF8EB1, 0x33E1F388, 0x33E4509D,
  0x33E6A650, 0x33E8F4F8, 0x33EB3CE9, 0x33ED7E70, 0x33EFB9D5, 0x33F1EF5E, 0x33F41F4A, 0x33F649D6,
  0x33F86F3C, 0x33FA8FB3, 0x33FCAB6D, 0x33FEC29C, 0x34006AB7, 0x34017208, 0x34027755, 0x34037AB3,
  0x34047C35, 0x34057BEC, 0x340679EB, 0x34077642, 0x34087102, 0x34096A38, 0x340A61F5, 0x340B5846,
  0x340C4D39, 0x340D40DB, 0x340E3338, 0x340F245D, 0x34101455, 0x3411032C, 0x3411F0EC, 0x3412DDA0,
  0x3413C953, 0x3414B40E, 0x34159DDB, 0x341686C3, 0x34176ECF, 0x34185608, 0x34193C77, 0x341A2224,
  0x341B0716, 0x341BEB56, 0x341CCEEB, 0x341DB1DE, 0x341E9435, 0x341F75F7, 0x3420572C, 0x342137D9,
  0x34221807, 0x3422F7BC, 0x3423D6FD, 0x3424B5D2, 0x34259440, 0x3426724D, 0x34275001, 0x34282D5F,
  0x34290A70, 0x3429E737, 0x342AC3BA, 0x342BA000, 0x342C7C0E, 0x342D57E9, 0x342E3397, 0x342F0F1C,
  0x342FEA7E, 0x3430C5C3, 0x3431A0EF, 0x34327C08, 0x34335713, 0x34343214, 0x34350D11, 0x3435E80F,
  0x3436C313, 0x34379E22, 0x34387940, 0x34395473, 0x343A2FBF, 0x343B0B2A, 0x343BE6B8, 0x343CC26E,
  0x343D9E52, 0x343E7A68, 0x343F56B4, 0x3440333D, 0x34411007, 0x3441ED16, 0x3442CA71, 0x3443A81B,
  0x3444861B, 0x34456475, 0x3446432D, 0x3447224B, 0x344801D1, 0x3448E1C7, 0x3449C231, 0x344AA314,
  0x344B8476, 0x344C665C, 0x344D48CD, 0x344E2BCC, 0x344F0F61, 0x344FF391, 0x3450D862, 0x3451BDD9,
  0x3452A3FD, 0x34538AD4, 0x34547263, 0x34555AB2, 0x345643C6, 0x34572DA7, 0x3458185A, 0x345903E8,
  0x3459F055, 0x345ADDAA, 0x345BCBEE, 0x345CBB28, 0x345DAB5F, 0x345E9C9B, 0x345F8EE5, 0x34608243,
  0x346176BF, 0x34626C61, 0x34636330, 0x34645B37, 0x3465547E, 0x34664F0E, 0x34674AF2, 0x34684832,
  0x346946D9, 0x346A46F1, 0x346B4885, 0x346C4BA0, 0x346D504D, 0x346E5698, 0x346F5E8D, 0x34706838,
  0x347173A6, 0x347280E5, 0x34739001, 0x3474A10A, 0x3475B40E, 0x3476C91C, 0x3477E043, 0x3478F994,
  0x347A1520, 0x347B32F9, 0x347C5330, 0x347D75D9, 0x347E9B07, 0x347FC2CE, 0x348076A2, 0x34810D40,
  0x3481A54C, 0x34823ED2, 0x3482D9E0, 0x34837681, 0x348414C4, 0x3484B4B8, 0x3485566C, 0x3485F9EF,
  0x34869F52, 0x348746A6, 0x3487EFFF, 0x34889B70, 0x3489490D, 0x3489F8EB, 0x348AAB22, 0x348B5FCA,
  0x348C16FC, 0x348CD0D3, 0x348D8D6C, 0x348E4CE5, 0x348F0F60, 0x348FD4FE, 0x34909DE5, 0x34916A3C,
  0x34923A2D, 0x34930DE6, 0x3493E598, 0x3494C176, 0x3495A1BB, 0x349686A2, 0x3497706E, 0x34985F67,
  0x349953DB, 0x349A4E20, 0x349B4E94, 0x349C559D, 0x349D63AC, 0x349E793E, 0x349F96DD, 0x34A0BD25,
  0x34A1ECC1, 0x34A32672, 0x34A46B14, 0x34A5BB9D, 0x34A71928, 0x34A884FB, 0x34AA008B, 0x34AB8D8D,
  0x34AD2E04, 0x34AEE451, 0x34B0B34E, 0x34B29E74, 0x34B4AA06, 0x34B6DB5C, 0x34B93948, 0x34BBCCAB,
  0x34BEA170, 0x34C1C818, 0x34C5587E, 0x34C97705, 0x34CE5F70, 0x34D47EE4, 0x34DCC0FA, 0x34E9DDA4,
);
const FI_FLOAT_BITS = Uint32Array.of(
  0x3F800000, 0x3F7A2356, 0x3F75BAA3, 0x3F71F88F, 0x3F6E9B7D, 0x3F6B8490, 0x3F68A24C, 0x3F65E99D,
  0x3F6352F6, 0x3F60D8E7, 0x3F5E775A, 0x3F5C2B2A, 0x3F59F1D4, 0x3F57C952, 0x3F55AFF8, 0x3F53A45F,
  0x3F51A558, 0x3F4FB1DF, 0x3F4DC914, 0x3F4BEA33, 0x3F4A148E, 0x3F48478E, 0x3F4682AA, 0x3F44C56A,
  0x3F430F60, 0x3F416028, 0x3F3FB76A, 0x3F3E14D4, 0x3F3C781A, 0x3F3AE0F8, 0x3F394F30, 0x3F37C286,
  0x3F363AC5, 0x3F34B7BB, 0x3F333939, 0x3F31BF15, 0x3F304925, 0x3F2ED743, 0x3F2D694D, 0x3F2BFF21,
  0x3F2A98A0, 0x3F2935AB, 0x3F27D627, 0x3F2679FA, 0x3F25210C, 0x3F23CB43, 0x3F22788A, 0x3F2128CC,
  0x3F1FDBF5, 0x3F1E91F1, 0x3F1D4AAD, 0x3F1C0619, 0x3F1AC424, 0x3F1984BE, 0x3F1847D8, 0x3F170D63,
  0x3F15D551, 0x3F149F94, 0x3F136C21, 0x3F123AEB, 0x3F110BE5, 0x3F0FDF05, 0x3F0EB440, 0x3F0D8B8B,
  0x3F0C64DC, 0x3F0B4029, 0x3F0A1D69, 0x3F08FC92, 0x3F07DD9D, 0x3F06C081, 0x3F05A534, 0x3F048BB1,
  0x3F0373EE, 0x3F025DE5, 0x3F01498F, 0x3F0036E4, 0x3EFE4BBC, 0x3EFC2CED, 0x3EFA114E, 0x3EF7F8D4,
  0x3EF5E371, 0x3EF3D11B, 0x3EF1C1C7, 0x3EEFB56A, 0x3EEDABFA, 0x3EEBA56B, 0x3EE9A1B5, 0x3EE7A0CE,
  0x3EE5A2AC, 0x3EE3A746, 0x3EE1AE93, 0x3EDFB88C, 0x3EDDC527, 0x3EDBD45C, 0x3ED9E623, 0x3ED7FA75,
  0x3ED6114A, 0x3ED42A9A, 0x3ED2465F, 0x3ED06492, 0x3ECE852B, 0x3ECCA824, 0x3ECACD77, 0x3EC8F51D,
  0x3EC71F10, 0x3EC54B4A, 0x3EC379C5, 0x3EC1AA7C, 0x3EBFDD69, 0x3EBE1285, 0x3EBC49CD, 0x3EBA833B,
  0x3EB8BECA, 0x3EB6FC74, 0x3EB53C35, 0x3EB37E09, 0x3EB1C1EA, 0x3EB007D4, 0x3EAE4FC2, 0x3EAC99B1,
  0x3EAAE59C, 0x3EA9337E, 0x3EA78354, 0x3EA5D51B, 0x3EA428CD, 0x3EA27E67, 0x3EA0D5E7, 0x3E9F2F47,
  0x3E9D8A84, 0x3E9BE79B, 0x3E9A4689, 0x3E98A74A, 0x3E9709DC, 0x3E956E3A, 0x3E93D462, 0x3E923C51,
  0x3E90A604, 0x3E8F1178, 0x3E8D7EAA, 0x3E8BED97, 0x3E8A5E3E, 0x3E88D09A, 0x3E8744AB, 0x3E85BA6C,
  0x3E8431DC, 0x3E82AAF9, 0x3E8125C0, 0x3E7F445C, 0x3E7C4084, 0x3E793FF3, 0x3E7642A5, 0x3E734896,
  0x3E7051C1, 0x3E6D5E23, 0x3E6A6DB8, 0x3E67807C, 0x3E64966D, 0x3E61AF86, 0x3E5ECBC4, 0x3E5BEB24,
  0x3E590DA3, 0x3E56333D, 0x3E535BF0, 0x3E5087BA, 0x3E4DB696, 0x3E4AE883, 0x3E481D7E, 0x3E455585,
  0x3E429094, 0x3E3FCEAB, 0x3E3D0FC7, 0x3E3A53E5, 0x3E379B04, 0x3E34E522, 0x3E32323D, 0x3E2F8254,
  0x3E2CD564, 0x3E2A2B6D, 0x3E27846D, 0x3E24E063, 0x3E223F4E, 0x3E1FA12C, 0x3E1D05FD, 0x3E1A6DC0,
  0x3E17D874, 0x3E154619, 0x3E12B6AD, 0x3E102A31, 0x3E0DA0A5, 0x3E0B1A07, 0x3E089659, 0x3E06159A,
  0x3E0397CA, 0x3E011CEB, 0x3DFD49F6, 0x3DF85FF9, 0x3DF37BE0, 0x3DEE9DAB, 0x3DE9C55E, 0x3DE4F2FA,
  0x3DE02683, 0x3DDB5FFC, 0x3DD69F67, 0x3DD1E4CA, 0x3DCD3027, 0x3DC88184, 0x3DC3D8E5, 0x3DBF3650,
  0x3DBA99CB, 0x3DB6035C, 0x3DB17309, 0x3DACE8DB, 0x3DA864D8, 0x3DA3E70A, 0x3D9F6F79, 0x3D9AFE2F,
  0x3D969336, 0x3D922E9A, 0x3D8DD066, 0x3D8978A7, 0x3D852769, 0x3D80DCBD, 0x3D793161, 0x3D70B6AA,
  0x3D684978, 0x3D5FE9F0, 0x3D57983D, 0x3D4F5488, 0x3D471F01, 0x3D3EF7DC, 0x3D36DF4E, 0x3D2ED592,
  0x3D26DAE8, 0x3D1EEF96, 0x3D1713E7, 0x3D0F482D, 0x3D078CC1, 0x3CFFC40F, 0x3CF090D7, 0x3CE180CC,
  0x3CD294FA, 0x3CC3CE8E, 0x3CB52ED8, 0x3CA6B758, 0x3C9869C4, 0x3C8A481A, 0x3C78A952, 0x3C5D2469,
  0x3C420820, 0x3C275CB2, 0x3C0D2C91, 0x3BE70B08, 0x3BB4F547, 0x3B8450F8, 0x3B2AFCFA, 0x3AA5302E,
);

const _bits = new DataView(new ArrayBuffer(4));
function floatFromBits(word) {
  _bits.setUint32(0, word);
  return _bits.getFloat32(0);
}
function bitsOfFloat(x) {
  _bits.setFloat32(0, x);
  return _bits.getInt32(0);
}
const WI_FLOAT = Float64Array.from(WI_FLOAT_BITS, floatFromBits);
const FI_FLOAT = Float64Array.from(FI_FLOAT_BITS, floatFromBits);
const NOR_R_F = floatFromBits(0x4069dda4); // ziggurat_nor_r_f = 3.6541528853610088f
const NOR_INV_R_F = floatFromBits(0x3e8c1d53); // ziggurat_nor_inv_r_f = 0.27366123732975828f

const f32 = Math.fround;

// fdlibm's s_log1pf.c (glibc's sysdeps/ieee754/flt-32/s_log1pf.c), float32 step by step.
const LN2_HI = floatFromBits(0x3f317180);
const LN2_LO = floatFromBits(0x3717f7d1);
const LP = [0x3f2aaaab, 0x3ecccccd, 0x3e924925, 0x3e638e29, 0x3e3a3325, 0x3e1cd04f, 0x3e178897]
  .map(floatFromBits); // Lp1 .. Lp7
const TWO_THIRDS_F = f32(0.66666666666666666);

/**
 * log(1 + x) in float32 as the C library's `log1pf` computes it (fdlibm's algorithm).
 *
 * Exported for the tests; the ziggurat's tail is its only user.
 */
export function log1pf(x) {
  x = f32(x);
  const hx = bitsOfFloat(x);
  const ax = hx & 0x7fffffff;
  let k = 1;
  let f = 0;
  let c = 0;
  let hu = 0;
  if (hx < 0x3ed413d7) { // x < 0.41422
    if (ax >= 0x3f800000) return x === -1 ? -Infinity : NaN; // x <= -1
    if (ax < 0x31000000) { // |x| < 2**-29
      if (ax < 0x24800000) return x;
      return f32(x - f32(f32(x * x) * 0.5));
    }
    if (hx > 0 || hx <= (0xbe95f61f | 0)) { // -0.2929 < x < 0.41422
      k = 0;
      f = x;
      hu = 1;
    }
  }
  if (hx >= 0x7f800000) return f32(x + x);
  if (k !== 0) {
    let u;
    if (hx < 0x5a000000) {
      u = f32(1 + x);
      hu = bitsOfFloat(u);
      k = (hu >> 23) - 127;
      c = k > 0 ? f32(1 - f32(u - x)) : f32(x - f32(u - 1)); // correction term
      c = f32(c / u);
    } else {
      u = x;
      hu = bitsOfFloat(u);
      k = (hu >> 23) - 127;
      c = 0;
    }
    hu &= 0x007fffff;
    if (hu < 0x3504f7) {
      _bits.setInt32(0, hu | 0x3f800000); // normalize u
      u = _bits.getFloat32(0);
    } else {
      k += 1;
      _bits.setInt32(0, hu | 0x3f000000); // normalize u / 2
      u = _bits.getFloat32(0);
      hu = (0x00800000 - hu) >> 2;
    }
    f = f32(u - 1);
  }
  const hfsq = f32(f32(0.5 * f) * f);
  const kf = f32(k);
  if (hu === 0) { // |f| < 2**-20
    if (f === 0) {
      if (k === 0) return 0;
      c = f32(c + f32(kf * LN2_LO));
      return f32(f32(kf * LN2_HI) + c);
    }
    const R = f32(hfsq * f32(1 - f32(TWO_THIRDS_F * f)));
    if (k === 0) return f32(f - R);
    return f32(f32(kf * LN2_HI) - f32(f32(R - f32(f32(kf * LN2_LO) + c)) - f));
  }
  const s = f32(f / f32(2 + f));
  const z = f32(s * s);
  let R = f32(z * LP[6]); // z * (Lp1 + z * (Lp2 + ... + z * Lp7)), innermost first
  for (let i = 5; i >= 0; i--) R = f32(z * f32(LP[i] + R));
  if (k === 0) return f32(f - f32(hfsq - f32(s * f32(hfsq + R))));
  return f32(f32(kf * LN2_HI) - f32(f32(hfsq - f32(f32(s * f32(hfsq + R)) + f32(f32(kf * LN2_LO) + c))) - f));
}

/** random_standard_normal_f: one float32 N(0, 1) draw from a PCG64. */
export function standardNormalF32(bitgen) {
  for (;;) {
    const r = bitgen.next32(); // n23sb8: 23 bits of magnitude, a sign bit, 8 bits of index
    const idx = r & 0xff;
    const sign = (r >>> 8) & 0x1;
    const rabs = (r >>> 9) & 0x007fffff;
    let x = f32(rabs * WI_FLOAT[idx]);
    if (sign) x = -x;
    if (rabs < KI_FLOAT[idx]) return x; // 99.3% of the time
    if (idx === 0) { // the tail beyond r
      for (;;) {
        // float32: xx = -r_inv * log1pf(-U); yy = -log1pf(-U)
        const xx = f32(-NOR_INV_R_F * log1pf(-bitgen.nextFloat()));
        const yy = -log1pf(-bitgen.nextFloat());
        if (f32(yy + yy) > f32(xx * xx)) {
          const tail = f32(NOR_R_F + xx);
          return (rabs >>> 8) & 0x1 ? -tail : tail;
        }
      }
    }
    // the wedge: float32 left side, double exp on the right, compared in double
    const diff = f32(FI_FLOAT[idx - 1] - FI_FLOAT[idx]);
    const left = f32(f32(diff * bitgen.nextFloat()) + FI_FLOAT[idx]);
    if (left < Math.exp(-0.5 * x * x)) return x;
  }
}

// ------------------------------------------------------------ Generator

/** The parts of `np.random.Generator(PCG64(seed))` this page needs. */
export class Generator {
  constructor(bitgen) {
    this.bitgen = bitgen;
  }

  /** `standard_normal(count, dtype=np.float32)`, C order: a Float32Array of `count`. */
  standardNormal(count) {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = standardNormalF32(this.bitgen);
    return out;
  }

  /** `random(count)`: float64 uniforms in [0, 1). */
  random(count) {
    const out = new Float64Array(count);
    for (let i = 0; i < count; i++) out[i] = this.bitgen.nextDouble();
    return out;
  }

  /**
   * `choice(k, size=count, p=p)` with replacement: indices drawn with probabilities `p`.
   *
   * As numpy does it: `cdf = cumsum(p); cdf /= cdf[-1];
   * searchsorted(cdf, random(count), side="right")`.
   *
   * @throws {RangeError} p of the wrong length, negative, NaN, or not summing to 1
   *   (within sqrt of float64 eps, numpy's tolerance).
   */
  choice(k, count, p) {
    if (p.length !== k) throw new RangeError(`choice: a and p must have same size (${k} != ${p.length})`);
    let sum = 0;
    for (const v of p) {
      if (Number.isNaN(v)) throw new RangeError("choice: probabilities contain NaN");
      if (v < 0) throw new RangeError("choice: probabilities are not non-negative");
      sum += v;
    }
    if (Math.abs(sum - 1) > Math.sqrt(Number.EPSILON)) {
      throw new RangeError(`choice: probabilities do not sum to 1 (sum ${sum})`);
    }
    const cdf = new Float64Array(k);
    let acc = 0;
    for (let i = 0; i < k; i++) {
      acc += p[i];
      cdf[i] = acc;
    }
    const last = cdf[k - 1];
    for (let i = 0; i < k; i++) cdf[i] /= last;
    const u = this.random(count);
    const out = new Int32Array(count);
    for (let i = 0; i < count; i++) {
      let lo = 0;
      let hi = k; // first index with cdf > u (side="right")
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (cdf[mid] <= u[i]) lo = mid + 1;
        else hi = mid;
      }
      out[i] = lo;
    }
    return out;
  }
}

/** `np.random.default_rng(seed)`; the seed as in `toSeed` (no OS entropy: a seed is required). */
export function defaultRng(seed) {
  return new Generator(new PCG64(seed));
}

// ------------------------------------------------------------- latents

function checkCount(name, value, min) {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`${name} must be an integer >= ${min}, got ${value}`);
  }
}

/**
 * `np.random.default_rng(seed).standard_normal((n, latentDim), dtype=np.float32)`.
 *
 * The codes `VAE.sample(n, seed=seed)` and keras_vae/recipes.py's `prior_z` decode.
 *
 * @returns {Float32Array} n * latentDim values, row-major.
 */
export function priorZ(n, latentDim, seed) {
  checkCount("n", n, 0);
  checkCount("latentDim", latentDim, 1);
  return defaultRng(seed).standardNormal(n * latentDim);
}

/**
 * Spherical interpolation from `a` to `b` in `steps` points, as recipes.interpolate.
 *
 * Float64 maths then float32: `t = linspace(0, 1, steps)`,
 * `omega = arccos(clip(a.b / (|a| |b|), -1, 1))`; below 1e-6 rad a straight
 * line; the first and last rows are exactly `a` and `b`.
 *
 * @returns {Float32Array} steps * a.length values, row-major.
 */
export function slerp(a, b, steps) {
  checkCount("steps", steps, 2);
  const d = a.length;
  if (b.length !== d) throw new RangeError(`slerp: a has ${d} values, b has ${b.length}`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let j = 0; j < d; j++) {
    dot += a[j] * b[j];
    na += a[j] * a[j];
    nb += b[j] * b[j];
  }
  const cos = dot / (Math.sqrt(na) * Math.sqrt(nb));
  const omega = Math.acos(Math.min(1, Math.max(-1, cos)));
  const sinOmega = Math.sin(omega);
  const step = 1 / (steps - 1); // np.linspace: arange(steps) * step, last = stop
  const out = new Float32Array(steps * d);
  for (let i = 0; i < steps; i++) {
    const t = i === steps - 1 ? 1 : i * step;
    for (let j = 0; j < d; j++) {
      let v;
      if (i === 0) v = a[j];
      else if (i === steps - 1) v = b[j];
      else if (omega < 1e-6) v = (1 - t) * a[j] + t * b[j];
      else v = (Math.sin((1 - t) * omega) * a[j] + Math.sin(t * omega) * b[j]) / sinOmega;
      out[i * d + j] = v;
    }
  }
  return out;
}

/**
 * recipes.interpolate: slerp between the first prior draws of two seeds.
 *
 * @returns {Float32Array} steps * latentDim values; row 0 is priorZ(1, d, seedA).
 */
export function interpolate(seedA, seedB, steps, latentDim) {
  return slerp(priorZ(1, latentDim, seedA), priorZ(1, latentDim, seedB), steps);
}

/**
 * Draws from a Gaussian-mixture prior sum_k w_k N(means_k, diag(exp(logVars_k))).
 *
 * Reproduces, with the arrays converted to float64 first:
 *
 *   rng = np.random.default_rng(seed)
 *   comps = rng.choice(K, size=n, p=weights)       # float64 uniforms, searchsorted
 *   eps = rng.standard_normal((n, d), dtype=np.float32)
 *   z = (means[comps] + np.exp(0.5 * log_vars[comps]) * eps).astype(np.float32)
 *
 * `comps` and `eps` are bit-exact; `z` is computed in float64 and rounded to
 * float32, so it equals numpy's unless the two `exp`s (V8's, numpy's) differ
 * in the last double bit right at a float32 rounding boundary.
 *
 * @param {number} n number of latents.
 * @param {*} seed as `toSeed`.
 * @param {ArrayLike<number>} weights (K,) mixture weights summing to 1.
 * @param {ArrayLike<number>} means (K * d) row-major component means.
 * @param {ArrayLike<number>} logVars (K * d) row-major component log-variances.
 * @returns {{z: Float32Array, comps: Int32Array, eps: Float32Array}}
 */
export function mixturePriorZ(n, seed, weights, means, logVars) {
  checkCount("n", n, 0);
  const k = weights.length;
  checkCount("number of components", k, 1);
  const d = means.length / k;
  if (!Number.isInteger(d) || d < 1 || logVars.length !== means.length) {
    throw new RangeError(`mixturePriorZ: means (${means.length}) and logVars (${logVars.length}) must both be K * d with K = ${k}`);
  }
  const rng = defaultRng(seed);
  const comps = rng.choice(k, n, Float64Array.from(weights));
  const eps = rng.standardNormal(n * d);
  const z = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const c = comps[i];
    for (let j = 0; j < d; j++) {
      z[i * d + j] = means[c * d + j] + Math.exp(0.5 * logVars[c * d + j]) * eps[i * d + j];
    }
  }
  return { z, comps, eps };
}
