/* OpSpaceController.__call__ + mj_step for n substeps, in C (see opspace.py for the algebra).
   Returns the substeps done; stops before a substep whose Lambda^-1 is near-singular
   (det < 1e-2), which Python then does with its pseudo-inverse branch. */
#include <mujoco/mujoco.h>

int osc_advance(const mjModel* m, mjData* d, int nstep, int site, int dof0, int qpos0, int act0,
                int n, const double* pos, const double* quat, const double* qnull,
                const double* kp, const double* kd, double kpn, double kdn,
                double* jac, double* jminv) {
  int nv = m->nv;
  double err[6], cq[4], rv[3], ddq[16], rhs[6], L[36], w[6];
  if (n > 16) return 0;
  for (int s = 0; s < nstep; s++) {
    mj_jacSite(m, d, jac, jac + 3 * nv, site);
    const double* xpos = d->site_xpos + 3 * site;
    const double* xmat = d->site_xmat + 9 * site;
    for (int k = 0; k < 3; k++) err[k] = pos[k] - xpos[k];
    mju_mat2Quat(cq, xmat);
    mju_subQuat(rv, quat, cq);
    for (int r = 0; r < 3; r++)
      err[3 + r] = xmat[3 * r] * rv[0] + xmat[3 * r + 1] * rv[1] + xmat[3 * r + 2] * rv[2];
    const double* dq = d->qvel + dof0;
    const double* q = d->qpos + qpos0;
    for (int i = 0; i < n; i++) ddq[i] = (qnull[i] - q[i]) * kpn - dq[i] * kdn;
    mj_solveM(m, d, jminv, jac, 6);
    for (int r = 0; r < 6; r++) {
      const double* J = jac + r * nv + dof0;
      const double* JM = jminv + r * nv + dof0;
      double jdq = 0, jmddq = 0;
      for (int i = 0; i < n; i++) {
        jdq += J[i] * dq[i];
        jmddq += JM[i] * ddq[i];
      }
      rhs[r] = (kp[r] * err[r] - jdq * kd[r]) - jmddq;
      for (int c = 0; c < 6; c++) {
        const double* Jc = jac + c * nv + dof0;
        double acc = 0;
        for (int i = 0; i < n; i++) acc += JM[i] * Jc[i];
        L[6 * r + c] = acc;
      }
    }
    mju_cholFactor(L, 6, 0.0);
    double det = L[0] * L[7] * L[14] * L[21] * L[28] * L[35];
    det *= det;
    if (!(det >= 1e-2)) return s;
    mju_cholSolve(w, L, rhs, 6);
    const double* bias = d->qfrc_bias + dof0;
    for (int i = 0; i < n; i++) {
      double t = 0;
      for (int r = 0; r < 6; r++) t += jac[r * nv + dof0 + i] * w[r];
      d->ctrl[act0 + i] = t + ddq[i] + bias[i];
    }
    mj_step(m, d);
  }
  return nstep;
}

/* DLSInverseKinematics.solve in C (see ik.py): on the solver's private MjData, contiguous arm
   qpos/dofs of n <= 16 joints; writes the best posture to out. Returns 0, or -1 if n > 16. */
static double clampd(double x, double lo, double hi) { return x < lo ? lo : (x > hi ? hi : x); }

int dls_ik(const mjModel* m, mjData* d, int site, int qpos0, int dof0, int n,
           const double* q_init, const double* lo, const double* hi, const double* pos,
           const double* quat, double lam2, double rw, int max_iters, double tol,
           double* jac, double* out) {
  int nv = m->nv;
  double q[16], best_q[16], err[6], cq[4], rv[3], A[36], y[6], J[6 * 16];
  if (n > 16) return -1;
  for (int i = 0; i < n; i++) best_q[i] = q[i] = clampd(q_init[i], lo[i], hi[i]);
  double best = 1.0 / 0.0;
  for (int it = 0; it < max_iters; it++) {
    for (int i = 0; i < n; i++) d->qpos[qpos0 + i] = q[i];
    mj_kinematics(m, d);
    const double* xpos = d->site_xpos + 3 * site;
    const double* xmat = d->site_xmat + 9 * site;
    for (int k = 0; k < 3; k++) err[k] = pos[k] - xpos[k];
    mju_mat2Quat(cq, xmat);
    mju_subQuat(rv, quat, cq);
    for (int r = 0; r < 3; r++)
      err[3 + r] = (xmat[3 * r] * rv[0] + xmat[3 * r + 1] * rv[1] + xmat[3 * r + 2] * rv[2]) * rw;
    double sq = 0;
    for (int k = 0; k < 6; k++) sq += err[k] * err[k];
    if (sq < tol * tol || sq > 0.98 * best) {
      if (sq < best)
        for (int i = 0; i < n; i++) best_q[i] = q[i];
      break;
    }
    best = sq;
    for (int i = 0; i < n; i++) best_q[i] = q[i];
    mj_comPos(m, d);
    mj_jacSite(m, d, jac, jac + 3 * nv, site);
    for (int r = 0; r < 6; r++)
      for (int i = 0; i < n; i++) J[r * n + i] = jac[r * nv + dof0 + i] * (r < 3 ? 1.0 : rw);
    for (int r = 0; r < 6; r++)
      for (int c = 0; c < 6; c++) {
        double acc = 0;
        for (int i = 0; i < n; i++) acc += J[r * n + i] * J[c * n + i];
        A[6 * r + c] = acc + (r == c ? lam2 : 0.0);
      }
    mju_cholFactor(A, 6, 0.0);
    mju_cholSolve(y, A, err, 6);
    for (int i = 0; i < n; i++) {
      double t = 0;
      for (int r = 0; r < 6; r++) t += J[r * n + i] * y[r];
      q[i] = clampd(q[i] + t, lo[i], hi[i]);
    }
  }
  for (int i = 0; i < n; i++) out[i] = best_q[i];
  return 0;
}
